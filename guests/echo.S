# guests/echo.S - console input: echoes every byte received on COM1, lowercase letters turned
# into uppercase, until it has received the line "quit" (ended by CR or LF).
#
# Default mode: polls LSR bit 0 (data ready) and reads RBR at CPL3 (the TSS I/O bitmap allows
# 0x3f8-0x3ff); two port reads per byte plus two port accesses per echoed byte (putc polls LSR).
# irq=1: interrupt-driven input. The UART raises its receive interrupt (IER bit 0; MCR OUT2 is
# already set by the runtime), the IOAPIC routes pin 4 (ISA IRQ 4, no override) level-triggered,
# active high, fixed, to this CPU on vector 0x34 (the 16550 holds its line high while data is
# pending). The CPL0 handler moves up to 256 bytes (LSR/RBR) into a 4 KiB ring and sends the
# EOI; the main loop, also at CPL0, echoes what is in the ring and otherwise does `sti; hlt`.
# A line is "quit" when exactly those 4 bytes precede the CR or LF. Nothing is bounded: the guest
# waits for input forever, so run it under a timeout.
# The UART's FIFOs stay off (see __wrap_serial_init32 below), so no input is lost at start-up.
#
# Output:   echo: ready (polling COM1), end with a line "quit"
#      or   echo: ready (COM1 receive interrupt on IOAPIC pin 4), end with a line "quit"
#           <the input, uppercased>         (nothing with quiet=1)
#           echo: bye after <N> bytes       (N counts every byte received, the final CR/LF too)
#           echo: <K> receive interrupts     (irq=1 only)
#           PASS
# Exit:     debug-exit 0x10 (status 33)
# Options:  irq=1     interrupt-driven input instead of polling
#           quiet=1   count only, echo nothing (halves the port I/O per byte)

    .include "guest.inc"

    .set COM1_IER,          COM1 + 1
    .set COM1_MCR,          COM1 + 4
    .set LSR_DATA_READY,    0x01
    .set VEC_COM1,          0x34
    .set VEC_SPURIOUS,      0x3f
    .set COM1_IOAPIC_PIN,   4
    .set LAPIC_TPR,         0x080
    .set LAPIC_EOI,         0x0b0
    .set LAPIC_SVR,         0x0f0
    .set LAPIC_ID,          0x020
    .set RING_SIZE,         4096            # power of two
    .set IRQ_DRAIN_MAX,     256             # bytes taken per interrupt
    .set WORD_QUIT,         0x74697571      # "quit"

    .text
    .code64
    .globl guest_main
guest_main:
    mov $read_options, %edi         # option parsing at CPL3
    xor %esi, %esi
    call call_user
    test $1, %eax
    jnz echo_irq
    mov $echo_poll, %edi
    xor %esi, %esi
    call call_user                  # does not return: it ends the VM
    FAIL "echo_poll returned"

read_options:                       # CPL3 -> RAX bit 0 = irq
    mov $key_quiet, %esi
    xor %edi, %edi
    call cmdline_get_u64
    test %rax, %rax
    setnz quiet(%rip)
    mov $key_irq, %esi
    xor %edi, %edi
    call cmdline_get_u64
    test %rax, %rax
    setnz %al
    movzbl %al, %eax
    ret

# ---- polling, CPL3 --------------------------------------------------------------------------
echo_poll:
    PUTS "echo: ready (polling COM1), end with a line \"quit\"\n"
1:  mov $COM1_LSR, %edx
2:  in %dx, %al
    test $LSR_DATA_READY, %al
    jz 2b
    mov $COM1, %edx
    in %dx, %al
    movzbl %al, %edi
    call echo_byte
    test %eax, %eax
    jz 1b
    jmp echo_bye

# ---- interrupt-driven, CPL0 -----------------------------------------------------------------
echo_irq:
    mov $isr_table, %edi
    mov $com1_isr, %eax
    mov %rax, 8 * VEC_COM1(%rdi)
    mov $spurious_isr, %eax
    mov %rax, 8 * VEC_SPURIOUS(%rdi)
    mov $LAPIC_BASE, %ebx
    movl $0x100 | VEC_SPURIOUS, LAPIC_SVR(%rbx)     # software enable
    movl $0, LAPIC_TPR(%rbx)
    mov LAPIC_ID(%rbx), %eax        # physical destination: this CPU's APIC id
    and $0xff000000, %eax
    mov $IOAPIC_BASE, %ebp
    movl $0x10 + 2 * COM1_IOAPIC_PIN + 1, (%rbp)    # IOREGSEL: redirection entry, high dword
    mov %eax, 0x10(%rbp)
    movl $0x10 + 2 * COM1_IOAPIC_PIN, (%rbp)        # low: fixed, physical, active high, level
    movl $(1 << 15) | VEC_COM1, 0x10(%rbp)
    PUTS "echo: ready (COM1 receive interrupt on IOAPIC pin 4), end with a line \"quit\"\n"
    mov $COM1_IER, %edx
    mov $0x01, %al                  # received data available
    out %al, %dx
    mov $COM1_MCR, %edx
    mov $0x0b, %al                  # DTR, RTS, OUT2 (the PC's interrupt gate)
    out %al, %dx
1:  cli
    mov ring_tail(%rip), %ecx
    cmp ring_head(%rip), %ecx
    jne 2f
    sti                             # the ring is empty: wait (sti's shadow covers the hlt)
    hlt
    jmp 1b
2:  mov %ecx, %eax
    and $RING_SIZE - 1, %eax
    mov $ring, %edx
    movzbl (%rdx,%rax), %edi
    inc %ecx
    mov %ecx, ring_tail(%rip)
    call echo_byte
    test %eax, %eax
    jz 1b
    jmp echo_bye

# Interrupt handler (CPL0, interrupts off): ring <- RBR while LSR says data is ready, the ring
# has room and fewer than IRQ_DRAIN_MAX bytes were taken; then EOI. With a level-triggered pin,
# data left in the UART raises the interrupt again after the EOI.
com1_isr:
    incq irq_count(%rip)
    mov ring_head(%rip), %ecx
    mov $IRQ_DRAIN_MAX, %esi
    mov $ring, %r8d
1:  mov %ecx, %eax
    sub ring_tail(%rip), %eax
    cmp $RING_SIZE, %eax
    jae 2f
    mov $COM1_LSR, %edx
    in %dx, %al
    test $LSR_DATA_READY, %al
    jz 2f
    mov $COM1, %edx
    in %dx, %al
    mov %ecx, %edx
    and $RING_SIZE - 1, %edx
    mov %al, (%r8,%rdx)
    inc %ecx
    dec %esi
    jnz 1b
2:  mov %ecx, ring_head(%rip)
    mov $LAPIC_BASE, %eax
    movl $0, LAPIC_EOI(%rax)
    ret

spurious_isr:                       # no EOI for the spurious vector
    ret

# ---- serial set-up --------------------------------------------------------------------------
# Linked with --wrap=serial_init32, so common/entry.S calls this instead of lib32.S's version.
# Same settings (115200 8N1, no interrupts, DTR/RTS/OUT2) but FCR stays untouched: enabling the
# FIFOs clears the receiver, and input may already be waiting when the guest starts (Vessel and
# QEMU read stdin before the guest runs). Without FIFOs the UART holds one received byte and the
# VMM keeps the rest until RBR is read. Clobbers EAX, EDX.
    .code32
    .globl __wrap_serial_init32
__wrap_serial_init32:
    mov $COM1_IER, %dx
    xor %al, %al
    out %al, %dx                    # IER: no interrupts
    mov $COM1 + 3, %dx
    mov $0x80, %al
    out %al, %dx                    # LCR: DLAB
    mov $COM1, %dx
    mov $1, %al
    out %al, %dx                    # DLL: divisor 1 = 115200 baud
    mov $COM1 + 1, %dx
    xor %al, %al
    out %al, %dx                    # DLM
    mov $COM1 + 3, %dx
    mov $0x03, %al
    out %al, %dx                    # LCR: 8N1
    mov $COM1_MCR, %dx
    mov $0x0b, %al
    out %al, %dx                    # MCR: DTR, RTS, OUT2
    ret
    .code64

# ---- shared ---------------------------------------------------------------------------------
# echo_byte: DIL = received byte. Counts it, tracks the current line, echoes it (uppercased)
# unless quiet. EAX = 1 when it ended the line "quit", else 0. Any CPL. Clobbers RCX.
echo_byte:
    incq rx_count(%rip)
    xor %ecx, %ecx                  # result
    cmp $'\r', %dil
    je 2f
    cmp $'\n', %dil
    je 2f
    mov line_len(%rip), %rax        # remember the first 4 bytes of the line
    cmp $4, %rax
    jae 1f
    mov $line_buf, %ecx
    mov %dil, (%rcx,%rax)
    xor %ecx, %ecx
1:  incq line_len(%rip)
    jmp 3f
2:  cmpq $4, line_len(%rip)         # end of line: was it exactly "quit"?
    jne 4f
    cmpl $WORD_QUIT, line_buf(%rip)
    jne 4f
    mov $1, %ecx
4:  movq $0, line_len(%rip)
3:  cmpb $0, quiet(%rip)
    jne 6f
    push %rdi
    cmp $'a', %dil
    jb 5f
    cmp $'z', %dil
    ja 5f
    sub $'a' - 'A', %dil
5:  call putc
    pop %rdi
6:  mov %ecx, %eax
    ret

echo_bye:                           # any CPL
    PUTS "echo: bye after "
    PUTDEC rx_count(%rip)
    PUTS " bytes\n"
    cmpq $0, irq_count(%rip)
    je 1f
    PUTS "echo: "
    PUTDEC irq_count(%rip)
    PUTS " receive interrupts\n"
1:  PUTS "PASS\n"
    jmp exit_pass

    .section .rodata
key_irq:
    .asciz "irq"
key_quiet:
    .asciz "quiet"

    .data
    .balign 8
rx_count:   .quad 0
line_len:   .quad 0
irq_count:  .quad 0
line_buf:   .long 0
ring_head:  .long 0                 # written by the interrupt handler only
ring_tail:  .long 0                 # written by the main loop only
quiet:      .byte 0

    .bss
    .balign 64
ring:
    .skip RING_SIZE

    .section .note.GNU-stack, "", @progbits
