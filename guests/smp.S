# guests/smp.S - bring up every CPU the ACPI MADT lists.
#
# The BSP, at CPL3, finds the RSDP (EBDA first KiB, then 0xe0000-0xfffff), follows the XSDT (ACPI
# 2.0+) or RSDT to the MADT and counts the enabled Processor Local APIC (and x2APIC) entries.
# With more than one CPU it copies a real-mode trampoline to 0x8000, software-enables its LAPIC
# and, at CPL0, sends INIT, waits 10 ms, then SIPI (vector 0x08) twice 200 us apart, all with
# the all-excluding-self shorthand; delays and the timeout use PIT channel 0 (free-running,
# mode 2, read by latching). Each AP goes real mode -> 32-bit protected mode -> long mode (same
# GDT, IDT and page tables, a stack of its own), prints "cpu N up" (N = its LAPIC id) under a
# spinlock, atomically increments a shared counter and parks in a `cli; hlt` loop. The BSP waits
# until counter + 1 == MADT count (FAIL after 5 s), waits 10 ms more and checks that no extra CPU
# came up. With 1 CPU no IPI is sent.
#
# Output:   smp: MADT at 0x... lists <N> cpus
#           cpu <id> up                 (N - 1 lines, in any order)
#           smp: <N> of <N> cpus up
#           PASS
# Options:  none
# Failure:  FAIL: only <k> of <N> cpus up after 5 s   (and other FAIL: lines for ACPI problems)

    .include "guest.inc"

    .set TRAMPOLINE,        0x8000          # SIPI vector 0x08
    .set MAX_CPUS,          64              # one 4 KiB stack per AP
    .set AP_STACK_SIZE,     4096
    .set LAPIC_ID,          0x020
    .set LAPIC_SVR,         0x0f0
    .set LAPIC_ICR_LO,      0x300
    .set LAPIC_ICR_HI,      0x310
    .set ICR_INIT,          0x000c4500      # INIT, level assert, all excluding self
    .set ICR_SIPI,          0x000c4600 | (TRAMPOLINE >> 12)
    .set PIT_TICKS_10MS,    11932
    .set PIT_TICKS_200US,   239
    .set PIT_TICKS_TIMEOUT, PIT_HZ * 5
    .set SIG_APIC,          0x43495041      # "APIC"

    .text
    .code64
    .globl guest_main
guest_main:
    mov $acpi_count_cpus, %edi      # the memory scan runs at CPL3 (fast on every host)
    xor %esi, %esi
    call call_user
    mov %rax, %r12                  # N
    cmp $1, %r12
    jne 1f
    PUTS "smp: 1 of 1 cpus up\nPASS\n"
    jmp exit_pass
1:  cmp $MAX_CPUS, %r12
    jbe 2f
    FAIL "the MADT lists more cpus than this guest has AP stacks for (64)"

2:  mov $trampoline_start, %esi
    mov $TRAMPOLINE, %edi
    mov $trampoline_end - trampoline_start, %ecx
    rep movsb

    mov $LAPIC_BASE, %ebx
    mov LAPIC_SVR(%rbx), %eax
    or $0x100, %eax                 # software enable
    mov %eax, LAPIC_SVR(%rbx)
    call pit_start

    movl $0, LAPIC_ICR_HI(%rbx)
    movl $ICR_INIT, LAPIC_ICR_LO(%rbx)
    call icr_wait
    mov $PIT_TICKS_10MS, %edi
    call pit_delay
    movl $ICR_SIPI, LAPIC_ICR_LO(%rbx)
    call icr_wait
    mov $PIT_TICKS_200US, %edi
    call pit_delay
    movl $ICR_SIPI, LAPIC_ICR_LO(%rbx)
    call icr_wait

    xor %r13d, %r13d                # PIT ticks waited
    call pit_read
    mov %eax, %r14d
3:  mov ap_up(%rip), %eax
    inc %eax
    cmp %r12d, %eax
    jae 4f
    pause
    call pit_read
    mov %r14d, %edx
    sub %eax, %edx
    and $0xffff, %edx
    add %rdx, %r13
    mov %eax, %r14d
    cmp $PIT_TICKS_TIMEOUT, %r13
    jb 3b
    mov $print_lock, %edi
    call spin_lock
    mov ap_up(%rip), %eax
    inc %eax
    PUTS "FAIL: only "
    PUTDEC %rax
    PUTS " of "
    PUTDEC %r12
    PUTS " cpus up after 5 s\n"
    jmp exit_fail

4:  mov $PIT_TICKS_10MS, %edi       # late or repeated starts would show up now
    call pit_delay
    mov $print_lock, %edi
    call spin_lock
    mov ap_up(%rip), %eax
    inc %eax
    cmp %r12d, %eax
    je 5f
    PUTS "FAIL: "
    PUTDEC %rax
    PUTS " cpus came up but the MADT lists "
    PUTDEC %r12
    PUTS "\n"
    jmp exit_fail
5:  PUTS "smp: "
    PUTDEC %rax
    PUTS " of "
    PUTDEC %r12
    PUTS " cpus up\nPASS\n"
    jmp exit_pass

# Waits (bounded) for the ICR delivery status to clear. RBX = LAPIC base. Clobbers EAX, ECX.
icr_wait:
    mov $1000, %ecx
1:  testl $1 << 12, LAPIC_ICR_LO(%rbx)
    jz 2f
    pause
    dec %ecx
    jnz 1b
2:  ret

# PIT channel 0 free-running in mode 2 with the full 65536 reload. Clobbers EAX.
pit_start:
    mov $0x34, %al
    out %al, $0x43
    xor %eax, %eax
    out %al, $0x40
    out %al, $0x40
    ret

# Returns the channel 0 count (latched) in EAX.
pit_read:
    xor %eax, %eax
    out %al, $0x43                  # counter latch, channel 0
    in $0x40, %al
    mov %al, %ah
    in $0x40, %al
    xchg %al, %ah
    movzwl %ax, %eax
    ret

# Waits EDI PIT ticks (1.193182 MHz). Clobbers EAX, ECX, EDX, ESI.
pit_delay:
    call pit_read
    mov %eax, %esi
    xor %ecx, %ecx
1:  call pit_read
    mov %esi, %edx
    sub %eax, %edx
    and $0xffff, %edx
    add %edx, %ecx
    mov %eax, %esi
    cmp %edi, %ecx
    jb 1b
    ret

# ---- CPL3: ACPI --------------------------------------------------------------------------------
# Returns the number of enabled processors in the MADT; FAILs (and exits) when it cannot.
acpi_count_cpus:
    mov $SIG_APIC, %edi
    call acpi_find_table            # guests/common/acpi.S: RSDP -> XSDT/RSDT -> "APIC"
    test %rax, %rax
    jnz 1f
    FAIL "no MADT (APIC) table found through the RSDP and RSDT/XSDT"
1:  mov %rax, %rbx                  # MADT
    mov 4(%rbx), %ecx
    lea (%rbx,%rcx), %r9            # end
    lea 44(%rbx), %r10              # first entry after the local APIC address and flags
    xor %r11d, %r11d                # enabled processors
10: lea 2(%r10), %rax
    cmp %r9, %rax
    ja 13f
    movzbl (%r10), %eax             # type
    movzbl 1(%r10), %ecx            # length
    cmp $2, %ecx
    jb 13f
    cmp $0, %eax                    # Processor Local APIC: flags at +4
    jne 11f
    testb $1, 4(%r10)
    jz 12f
    inc %r11
    jmp 12f
11: cmp $9, %eax                    # Processor Local x2APIC: flags at +8
    jne 12f
    testb $1, 8(%r10)
    jz 12f
    inc %r11
12: add %rcx, %r10
    jmp 10b
13: PUTS "smp: MADT at "
    PUTHEX %rbx
    PUTS " lists "
    PUTDEC %r11
    PUTS " cpus\n"
    test %r11, %r11
    jnz 14f
    FAIL "the MADT lists no enabled processor"
14: mov %r11, %rax
    ret

# ---- application processors -----------------------------------------------------------------
# Copied to TRAMPOLINE; entered in real mode with CS = TRAMPOLINE >> 4, IP = 0.
    .code16
trampoline_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl tramp_gdt_desc - trampoline_start + TRAMPOLINE
    mov %cr0, %eax
    or $1, %eax                     # CR0.PE
    mov %eax, %cr0
    ljmpl $SEL_CODE32, $ap_entry32
    .balign 4
tramp_gdt_desc:
    .word GDT_LIMIT
    .long gdt
trampoline_end:

    .code32
ap_entry32:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $1, %eax
    lock xadd %eax, ap_ticket       # this AP's stack
    cmp $MAX_CPUS - 1, %eax
    jae ap_park
    inc %eax
    shl $12, %eax
    add $ap_stacks, %eax
    mov %eax, %esp
    ENTER_LONG_MODE ap_entry64
ap_park:
    cli
    hlt
    jmp ap_park

    .code64
ap_entry64:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    lidt idt_desc(%rip)             # faults on an AP are reported like anywhere else
    mov $LAPIC_BASE, %eax
    mov LAPIC_ID(%rax), %ebx
    shr $24, %ebx
    mov $print_lock, %edi
    call spin_lock
    PUTS "cpu "
    PUTDEC %rbx
    PUTS " up\n"
    call spin_unlock
    lock incl ap_up(%rip)
1:  cli
    hlt
    jmp 1b

    .data
    .balign 4
ap_up:      .long 0                 # APs that reported
ap_ticket:  .long 0                 # APs that took a stack
print_lock: .long 0

    .bss
    .balign 4096
ap_stacks:
    .skip MAX_CPUS * AP_STACK_SIZE

    .section .note.GNU-stack, "", @progbits
