# guests/triple-fault.S - a deliberate triple fault: 32-bit protected mode (CPL0, no paging),
# loads an IDT with limit 0 and executes `ud2`. #UD finds no gate (beyond the IDT limit: #GP),
# #GP finds none (#DF), #DF finds none: shutdown. A VMM reports the shutdown (Vessel: exit
# status 2, "vCPU 0 shut down (triple fault)"); QEMU resets the machine (with -no-reboot it exits
# with status 0).
#
# Output:   triple-fault: loading an empty IDT
# Failure:  FAIL: still running after ud2 with an empty IDT   (debug-exit 0x11, status 35)
# Options:  none

    .include "guest.inc"

    .text
    .code32
    .globl boot_next
boot_next:
    PUTS32 "triple-fault: loading an empty IDT\n"
    lidt empty_idt
    ud2
    PUTS32 "FAIL: still running after ud2 with an empty IDT\n"
    mov $EXIT_FAIL, %al
    jmp exit32

    .section .rodata
    .balign 8
empty_idt:
    .word 0                         # limit 0: not even vector 0 fits
    .long 0

    .section .note.GNU-stack, "", @progbits
