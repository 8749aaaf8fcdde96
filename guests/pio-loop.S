# guests/pio-loop.S - N port writes to the POST port (0x80) from CPL3: one VM exit each.
#
# Output:   pio-loop: <N> exits
#           PASS
# Options:  iterations=N   number of `out` instructions (default 100000; 0 is allowed)

    .include "guest.inc"

    .text
    .code64
    .globl guest_main
guest_main:
    mov $pio_user, %edi
    xor %esi, %esi
    call call_user
    FAIL "pio_user returned to CPL0"

pio_user:                           # CPL3
    mov $key_iterations, %esi
    mov $100000, %edi
    call cmdline_get_u64
    mov %rax, %rbx
    mov %rax, %rcx
    test %rcx, %rcx
    jz 2f
    xor %eax, %eax
    .balign 16
1:  out %al, $POST_PORT             # the loop: out, dec, jnz
    dec %rcx
    jnz 1b
2:  PUTS "pio-loop: "
    PUTDEC %rbx
    PUTS " exits\nPASS\n"
    jmp exit_pass

    .section .rodata
key_iterations:
    .asciz "iterations"

    .section .note.GNU-stack, "", @progbits
