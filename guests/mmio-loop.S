# guests/mmio-loop.S - N 4-byte stores to 0xc0000000 from CPL3: one MMIO exit each on a VMM
# that maps nothing there (Vessel leaves 0xc0000000-0xcfffffff unmapped and ignores the writes).
# The page is identity-mapped, user-accessible and uncached (common/long.S).
#
# Output:   mmio-loop: <N> exits
#           PASS
# Options:  iterations=N   number of stores (default 100000; 0 is allowed)

    .include "guest.inc"

    .set MMIO_TARGET, 0xc0000000

    .text
    .code64
    .globl guest_main
guest_main:
    mov $mmio_user, %edi
    xor %esi, %esi
    call call_user
    FAIL "mmio_user returned to CPL0"

mmio_user:                          # CPL3
    mov $key_iterations, %esi
    mov $100000, %edi
    call cmdline_get_u64
    mov %rax, %rbx
    mov %rax, %rcx
    test %rcx, %rcx
    jz 2f
    mov $MMIO_TARGET, %edi          # 32-bit mov: zero-extended
    xor %eax, %eax
    .balign 16
1:  movl %eax, (%rdi)               # the loop: store, dec, jnz
    dec %rcx
    jnz 1b
2:  PUTS "mmio-loop: "
    PUTDEC %rbx
    PUTS " exits\nPASS\n"
    jmp exit_pass

    .section .rodata
key_iterations:
    .asciz "iterations"

    .section .note.GNU-stack, "", @progbits
