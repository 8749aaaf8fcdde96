# guests/interrupts.S - LAPIC timer and PIT (through the IOAPIC) interrupts, at CPL0.
#
# Masks the 8259s, software-enables the LAPIC (spurious vector 0x3f), starts the LAPIC timer in
# periodic mode (vector 0x30, divide by 16, initial count 62500: 1 ms with the 1 GHz APIC clock of
# QEMU and KVM), routes IOAPIC pin 2 (ISA IRQ0) edge/fixed/physical to this CPU's APIC id on
# vector 0x31 and runs PIT channel 0 in mode 2 at ~1 kHz (reload 1193). Then `sti; hlt` until
# both handlers (CPL0; count and EOI) have run `ticks` times, bounded by 1000 + 100 * ticks
# halts. Finally masks both sources again.
#
# Output:   interrupts: waiting for <ticks> lapic timer and pit interrupts
#           lapic timer ticks: <n>      (n >= ticks; the exact numbers vary)
#           pit ticks: <n>
#           PASS
# Options:  ticks=N   interrupts wanted from each source (default 5)
# Failure:  FAIL: gave up after <h> halts (lapic timer ticks <n>, pit ticks <n>)
# A VMM delivering no interrupt at all leaves the guest halted with IF=1 (no time source is left
# to give up with): run it under a timeout.

    .include "guest.inc"

    .set VEC_LAPIC_TIMER, 0x30
    .set VEC_PIT,         0x31
    .set VEC_SPURIOUS,    0x3f
    .set LAPIC_ID,        0x020
    .set LAPIC_TPR,       0x080
    .set LAPIC_EOI,       0x0b0
    .set LAPIC_SVR,       0x0f0
    .set LAPIC_LVT_TIMER, 0x320
    .set LAPIC_TIMER_ICR, 0x380
    .set LAPIC_TIMER_DCR, 0x3e0
    .set LAPIC_TIMER_COUNT, 62500
    .set PIT_RELOAD,      1193

    .text
    .code64
    .globl guest_main
guest_main:
    mov $key_ticks, %esi
    mov $5, %edi
    call cmdline_get_u64
    test %rax, %rax
    jnz 1f
    inc %eax                        # at least one of each
1:  mov %rax, %r12                  # ticks wanted
    imul $100, %rax, %r13
    add $1000, %r13                 # halt budget

    mov $isr_table, %edi
    mov $lapic_timer_isr, %eax
    mov %rax, 8 * VEC_LAPIC_TIMER(%rdi)
    mov $pit_isr, %eax
    mov %rax, 8 * VEC_PIT(%rdi)
    mov $spurious_isr, %eax
    mov %rax, 8 * VEC_SPURIOUS(%rdi)

    mov $0xff, %al                  # legacy PICs stay masked (entry.S did so too)
    out %al, $0x21
    out %al, $0xa1

    mov $LAPIC_BASE, %ebx
    movl $0x100 | VEC_SPURIOUS, LAPIC_SVR(%rbx)      # software enable
    movl $0, LAPIC_TPR(%rbx)
    movl $0x3, LAPIC_TIMER_DCR(%rbx)                  # divide by 16
    movl $(1 << 17) | VEC_LAPIC_TIMER, LAPIC_LVT_TIMER(%rbx)  # periodic, unmasked
    movl $LAPIC_TIMER_COUNT, LAPIC_TIMER_ICR(%rbx)

    mov LAPIC_ID(%rbx), %eax        # IOAPIC pin 2 -> this CPU (physical destination = APIC id)
    and $0xff000000, %eax
    mov $IOAPIC_BASE, %ebp
    movl $0x10 + 2 * 2 + 1, (%rbp)  # IOREGSEL: redirection entry 2, high dword
    mov %eax, 0x10(%rbp)            # IOWIN
    movl $0x10 + 2 * 2, (%rbp)      # low dword: fixed, physical, active high, edge, unmasked
    movl $VEC_PIT, 0x10(%rbp)

    mov $0x34, %al                  # PIT channel 0, lobyte/hibyte, mode 2, binary
    out %al, $0x43
    mov $PIT_RELOAD & 0xff, %al
    out %al, $0x40
    mov $PIT_RELOAD >> 8, %al
    out %al, $0x40

    PUTS "interrupts: waiting for "
    PUTDEC %r12
    PUTS " lapic timer and pit interrupts\n"
    xor %r14d, %r14d                # halts
2:  sti
    hlt
    cli
    inc %r14
    cmp %r12, lapic_ticks(%rip)
    jb 3f
    cmp %r12, pit_ticks(%rip)
    jae 4f
3:  cmp %r13, %r14
    jb 2b

    call quiesce
    PUTS "FAIL: gave up after "
    PUTDEC %r14
    PUTS " halts (lapic timer ticks "
    PUTDEC lapic_ticks(%rip)
    PUTS ", pit ticks "
    PUTDEC pit_ticks(%rip)
    PUTS ")\n"
    jmp exit_fail

4:  call quiesce
    PUTS "lapic timer ticks: "
    PUTDEC lapic_ticks(%rip)
    PUTS "\npit ticks: "
    PUTDEC pit_ticks(%rip)
    PUTS "\nPASS\n"
    jmp exit_pass

quiesce:                            # mask both sources (interrupts are off)
    movl $(1 << 16) | VEC_LAPIC_TIMER, LAPIC_LVT_TIMER(%rbx)
    movl $0, LAPIC_TIMER_ICR(%rbx)
    movl $0x10 + 2 * 2, (%rbp)
    movl $(1 << 16) | VEC_PIT, 0x10(%rbp)
    ret

lapic_timer_isr:
    incq lapic_ticks(%rip)
    mov $LAPIC_BASE, %eax
    movl $0, LAPIC_EOI(%rax)
    ret

pit_isr:
    incq pit_ticks(%rip)
    mov $LAPIC_BASE, %eax
    movl $0, LAPIC_EOI(%rax)
    ret

spurious_isr:                       # no EOI for the spurious vector
    ret

    .section .rodata
key_ticks:
    .asciz "ticks"

    .data
    .balign 8
lapic_ticks:
    .quad 0
pit_ticks:
    .quad 0

    .section .note.GNU-stack, "", @progbits
