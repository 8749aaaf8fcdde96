# guests/hello.S - the smallest guest: stays in 32-bit protected mode at CPL0 (no paging), prints
# a greeting and the Multiboot command line, and exits with EXIT_PASS.
#
# Output:   Hello from the Vessel test guest
#           cmdline: <the Multiboot command line, or "(none)" when the loader gives none>
#           PASS
# Options:  none (the command line is only echoed)

    .include "guest.inc"

    .text
    .code32
    .globl boot_next
boot_next:
    PUTS32 "Hello from the Vessel test guest\n"
    PUTS32 "cmdline: "
    mov mb_cmdline, %esi
    test %esi, %esi
    jz 1f
    call puts32
    jmp 2f
1:  PUTS32 "(none)"
2:  PUTS32 "\nPASS\n"
    mov $EXIT_PASS, %al
    jmp exit32

    .section .note.GNU-stack, "", @progbits
