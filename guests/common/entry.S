# guests/common/entry.S - Multiboot 1 header and 32-bit entry shared by every test guest.
#
# The loader enters _start in 32-bit protected mode with paging off, EAX = 0x2BADB002 and
# EBX = multiboot_info. We load our own GDT and stack, remember the boot information, set up
# COM1, mask the legacy PICs and jump to `boot_next`, which each guest provides (directly for a
# 32-bit guest, or common/long.S, which switches to long mode and calls `guest_main`).

    .include "guest.inc"

    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .text
    .code32
    .globl _start
_start:
    cli
    cld
    lgdt gdt_desc
    ljmp $SEL_CODE32, $1f
1:  mov $SEL_DATA, %ecx
    mov %ecx, %ds
    mov %ecx, %es
    mov %ecx, %fs
    mov %ecx, %gs
    mov %ecx, %ss
    mov $kernel_stack_top, %esp
    mov %eax, mb_magic
    mov %ebx, mb_info

    call serial_init32
    mov $0xff, %al                  # mask both 8259s: nothing may arrive through them
    out %al, $0x21
    out %al, $0xa1

    cmpl $MB_BOOT_MAGIC, mb_magic
    jne bad_magic
    mov mb_info, %ebx
    testl $MB_INFO_CMDLINE, (%ebx)
    jz 2f
    mov 16(%ebx), %eax
    mov %eax, mb_cmdline
2:  jmp boot_next

bad_magic:
    PUTS32 "FAIL: not started by a Multiboot 1 loader (bad EAX magic)\n"
    mov $EXIT_FAIL, %al
    jmp exit32

    .data
    .balign 16
    .globl gdt, gdt_tss, gdt_desc
gdt:
    .quad 0                         # 0x00 null
    .quad 0x00af9a000000ffff        # 0x08 64-bit code, DPL0
    .quad 0x00cf92000000ffff        # 0x10 flat data, DPL0
    .quad 0x00cf9a000000ffff        # 0x18 32-bit code, DPL0
    .quad 0x00cff2000000ffff        # 0x20 flat data, DPL3
    .quad 0x00affa000000ffff        # 0x28 64-bit code, DPL3
gdt_tss:
    .quad 0, 0                      # 0x30 64-bit TSS, filled in by common/long.S
gdt_end:
    .if gdt_end - gdt - 1 - GDT_LIMIT
    .error "GDT_LIMIT in guest.inc does not match the GDT"
    .endif
    .balign 8
gdt_desc:                           # 32-bit lgdt uses 6 bytes, 64-bit lgdt 10
    .word GDT_LIMIT
    .long gdt, 0

    .globl mb_magic, mb_info, mb_cmdline
mb_magic:   .long 0
mb_info:    .long 0                 # physical address of multiboot_info
mb_cmdline: .long 0                 # physical address of the command line, 0 when absent

    .bss
    .balign 16
    .globl kernel_stack_top
kernel_stack:
    .skip 16384
kernel_stack_top:

    .section .note.GNU-stack, "", @progbits
