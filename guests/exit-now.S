# guests/exit-now.S - ends the VM with its very first instruction (after loading AL): the
# shortest possible boot, for start-up benchmarks. It does not use the shared runtime: no GDT,
# stack or serial set-up happens first, so it has its own Multiboot header and _start.
#
# Output:   none
# Exit:     debug-exit 0x10 -> status 33. Without a debug-exit device it halts for good.
# Options:  none

    .include "guest.inc"

    .section .multiboot, "a"
    .balign 4
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .text
    .code32
    .globl _start
_start:
    mov $EXIT_PASS, %al             # `out imm8` can only send AL
    out %al, $DEBUG_EXIT_PORT
1:  cli
    hlt
    jmp 1b

    .data
    # Never used: it keeps the RW segment (guest.ld) from being empty. An empty PT_LOAD lands at
    # address 0, and QEMU's Multiboot loader then does not start the guest at all.
    .long 0

    .section .note.GNU-stack, "", @progbits
