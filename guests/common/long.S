# guests/common/long.S - long mode for the 64-bit test guests.
#
# boot_next (32-bit, from entry.S) switches to 64-bit long mode at CPL0 on static page tables
# that identity-map 0-4 GiB with 2 MiB user-accessible pages, loads a 64-bit TSS whose I/O
# permission bitmap lets CPL3 use ports 0x3f8-0x3ff, 0x80 and 0xf4, installs an IDT for vectors
# 0-63 and calls the guest's `guest_main` (64-bit, CPL0).
#
# All tables are initialised data, not .bss, so nothing depends on the loader clearing memory,
# and building them costs no CPL0 instructions (CPL0 is emulated, and slow, on some hosts).
# Set-up executes roughly a thousand CPL0 instructions, mostly filling the 64 IDT gates.
#
# Interrupts and exceptions: every vector has a stub that saves the caller-saved registers and
# calls isr_table[vector] (a guest may install handlers there; a handler gets RDI = pointer to
# the saved state and returns with `ret`). Vectors without a handler print
# "FAIL: exception N ..." and end the VM with EXIT_FAIL, so any fault is visible.
#
# call_user(RDI = function, RSI = argument) runs function(argument) at CPL3 on the user stack
# and returns its RAX at CPL0 once it returns (the return lands on an `int3`, whose gate is the
# only DPL3 one). CPL3 code may also simply end the VM through exit_pass/exit_fail.

    .include "guest.inc"

    .text
    .code32
    .globl boot_next
boot_next:
    ENTER_LONG_MODE long_entry64

    .code64
long_entry64:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $kernel_stack_top, %esp
    call cpu_tables_init
    call guest_main
    FAIL "guest_main returned"

# Fills in the TSS descriptor and the IDT gates, loads TR and IDTR. Clobbers RAX, RCX, RSI, RDI.
    .globl cpu_tables_init
cpu_tables_init:
    mov $gdt_tss, %edi
    mov $tss, %eax
    movw $TSS_LIMIT, (%rdi)
    mov %ax, 2(%rdi)                # base 15:0
    shr $16, %eax
    mov %al, 4(%rdi)                # base 23:16
    movb $0x89, 5(%rdi)             # present, DPL0, available 64-bit TSS
    movb $0, 6(%rdi)                # limit 19:16 = 0, G = 0
    shr $8, %eax
    mov %al, 7(%rdi)                # base 31:24
    movl $0, 8(%rdi)                # base 63:32
    movl $0, 12(%rdi)
    mov $SEL_TSS, %eax
    ltr %ax

    mov $idt, %edi
    mov $isr_stubs, %esi
    xor %ecx, %ecx
1:  mov %esi, %eax
    mov %ax, (%rdi)                 # offset 15:0
    movw $SEL_CODE64, 2(%rdi)
    movw $0x8e00, 4(%rdi)           # present, DPL0, 64-bit interrupt gate, IST 0
    shr $16, %eax
    mov %ax, 6(%rdi)                # offset 31:16
    movl $0, 8(%rdi)                # offset 63:32
    movl $0, 12(%rdi)
    add $16, %edi
    add $ISR_STUB_SIZE, %esi
    inc %ecx
    cmp $IDT_VECTORS, %ecx
    jb 1b
    movb $0xee, idt + 3 * 16 + 5(%rip)  # int3 may be used at CPL3 (DPL3)
    lidt idt_desc(%rip)
    ret

# ---- CPL3 ------------------------------------------------------------------------------------
# call_user(RDI = function, RSI = argument) -> RAX. Preserves RBX, RBP, R12-R15.
    .globl call_user
call_user:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, saved_kernel_rsp(%rip)
    mov $user_stack_top - 16, %eax
    mov $user_return_stub, %ecx
    mov %rcx, (%rax)                # the function's return address
    pushq $SEL_UDATA                # SS
    push %rax                       # RSP
    pushq $0x2                      # RFLAGS: IF = 0, IOPL = 0
    pushq $SEL_UCODE64              # CS
    push %rdi                       # RIP
    mov %rsi, %rdi
    iretq

# Executed at CPL3: a user function returning from call_user, and exit_* finding no exit device.
    .globl user_return_stub, user_halt_stub
user_return_stub:
    int3
user_return_trap:
    jmp user_return_stub
user_halt_stub:
    int3
user_halt_trap:
    jmp user_halt_stub

# ---- interrupt and exception entry -----------------------------------------------------------
# One 16-byte stub per vector: push a zero error code unless the CPU pushed one, push the vector.
    .set ISR_STUB_SIZE, 16
    .balign ISR_STUB_SIZE
isr_stubs:
    .set vec, 0
    .rept IDT_VECTORS
    .balign ISR_STUB_SIZE
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp isr_common
    .set vec, vec + 1
    .endr
    .balign ISR_STUB_SIZE             # (each stub takes at most 2 + 2 + 5 bytes)

# Stack at entry: vector, error code, RIP, CS, RFLAGS, RSP, SS.
    .set FRAME_VECTOR, 72
    .set FRAME_ERROR,  80
    .set FRAME_RIP,    88
    .set FRAME_CS,     96
    .set FRAME_RFLAGS, 104
    .set FRAME_RSP,    112
    .set FRAME_RAX,    64
isr_common:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    mov FRAME_VECTOR(%rsp), %rax
    mov $isr_table, %ecx
    mov (%rcx,%rax,8), %rcx
    test %rcx, %rcx
    jz isr_unhandled
    mov %rsp, %rdi
    call *%rcx
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    add $16, %rsp
    iretq

isr_unhandled:
    cmp $3, %eax
    jne isr_fault
    testb $3, FRAME_CS(%rsp)
    jz isr_fault
    mov $user_return_trap, %ecx
    cmp %rcx, FRAME_RIP(%rsp)
    je isr_user_return
    mov $user_halt_trap, %ecx
    cmp %rcx, FRAME_RIP(%rsp)
    je isr_halt
isr_fault:
    mov %rsp, %rbx                  # the print macros push, so address the frame through RBX
    PUTS "FAIL: "
    cmp $32, %eax
    jb 1f
    PUTS "unexpected interrupt, vector "
    jmp 2f
1:  PUTS "exception "
2:  PUTDEC %rax
    PUTS " error "
    PUTHEX FRAME_ERROR(%rbx)
    PUTS " rip "
    PUTHEX FRAME_RIP(%rbx)
    PUTS " cs "
    PUTHEX FRAME_CS(%rbx)
    PUTS " rsp "
    PUTHEX FRAME_RSP(%rbx)
    cmp $14, %eax
    jne 3f
    PUTS " cr2 "
    mov %cr2, %rax
    PUTHEX %rax
3:  PUTS "\n"
    jmp exit_fail

isr_user_return:                    # back into call_user's caller with the function's RAX
    mov FRAME_RAX(%rsp), %rax
    mov saved_kernel_rsp(%rip), %rsp
    mov $SEL_DATA, %ecx
    mov %ecx, %ds
    mov %ecx, %es
    mov %ecx, %ss
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

isr_halt:
    cli
    hlt
    jmp isr_halt

# ---- tables ----------------------------------------------------------------------------------
    .data
    .balign 4096
    .globl pml4
pml4:                               # PML4[0] -> PDPT (first 512 GiB)
    .long pdpt + 0x7, 0
    .fill 511, 8, 0
pdpt:                               # four page directories: 0-4 GiB
    .long pd + 0x0000 + 0x7, 0
    .long pd + 0x1000 + 0x7, 0
    .long pd + 0x2000 + 0x7, 0
    .long pd + 0x3000 + 0x7, 0
    .fill 508, 8, 0
pd:                                 # 2 MiB pages, present | writable | user
    .set pde, 0
    .rept 1536                      # 0-3 GiB: RAM and whatever else, write-back
    .long (pde << 21) | 0x87, 0
    .set pde, pde + 1
    .endr
    .rept 512                       # 3-4 GiB: the MMIO hole, uncached (PCD | PWT)
    .long (pde << 21) | 0x9f, 0
    .set pde, pde + 1
    .endr

    .balign 16
    .globl idt, idt_desc, isr_table
idt:
    .fill IDT_VECTORS * 16, 1, 0
idt_desc:
    .word IDT_VECTORS * 16 - 1
    .long idt, 0
    .balign 8
isr_table:                          # handler per vector, 0 = fatal
    .fill IDT_VECTORS, 8, 0
saved_kernel_rsp:
    .quad 0

    .balign 16
tss:
    .long 0
    .long isr_stack_top, 0          # RSP0: stack for entries from CPL3
    .fill 102 - 12, 1, 0            # RSP1, RSP2, IST1-7, reserved
    .word iopb - tss                # I/O permission bitmap offset
iopb:                               # one bit per port 0-0x3ff, 0 = allowed at CPL3
    .fill 0x10, 1, 0xff
    .byte 0xfe                      # 0x80 (POST)
    .fill 0x1e - 0x11, 1, 0xff
    .byte 0xef                      # 0xf4 (debug exit)
    .fill 0x7f - 0x1f, 1, 0xff
    .byte 0x00                      # 0x3f8-0x3ff (COM1)
    .byte 0xff                      # required terminator byte
tss_end:
    .set TSS_LIMIT, tss_end - tss - 1
    .if iopb - tss - 104 + tss_end - iopb - 129
    .error "TSS layout"
    .endif

    .bss
    .balign 16
isr_stack:
    .skip 8192
isr_stack_top:
    .globl user_stack_top
user_stack:
    .skip 16384
user_stack_top:

    .section .note.GNU-stack, "", @progbits
