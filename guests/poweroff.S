# guests/poweroff.S - powers the machine off through ACPI: hardware-reduced S5.
#
# At CPL3 it walks RSDP -> XSDT (or RSDT) -> FADT and checks the FADT's SLEEP_CONTROL_REG
# (Generic Address Structure at offset 244, ACPI 5.0+); at CPL0 it writes SLP_TYP = 5 (S5) with
# SLP_EN, (5 << 2) | (1 << 5) = 0x34, to it (a byte `out` for system I/O, a byte store for
# system memory). Vessel then exits with status 0. If the guest is still running after a short
# CPL3 spin (~1e8 iterations), the write did nothing.
#
# Output:   poweroff: via ACPI S5
#           poweroff: SLEEP_CONTROL_REG is io 0x... (or memory 0x...)
# Failure:  FAIL: still running after S5   (debug-exit 0x11, status 35); FAIL: no ACPI FADT
#           found, FAIL: the FADT is too short ..., and FAIL: lines about the register itself
# Options:  none

    .include "guest.inc"

    .set SIG_FACP,              0x50434146  # "FACP"
    .set FADT_SLEEP_CONTROL,    244         # Generic Address Structure, 12 bytes
    .set SLP_S5,                (5 << 2) | (1 << 5)
    .set SPIN_ITERATIONS,       100000000

    .text
    .code64
    .globl guest_main
guest_main:
    mov $find_sleep_control, %edi   # the table walk runs at CPL3
    xor %esi, %esi
    call call_user
    mov %rax, %rdi
    mov $SLP_S5, %esi
    call acpi_gas_write8            # CPL0: the port is outside the TSS I/O bitmap
    mov $spin, %edi
    mov $SPIN_ITERATIONS, %esi
    call call_user
    FAIL "still running after S5"

find_sleep_control:                 # CPL3 -> RAX = the SLEEP_CONTROL_REG structure
    PUTS "poweroff: via ACPI S5\n"
    mov $SIG_FACP, %edi
    call acpi_find_table
    test %rax, %rax
    jnz 1f
    FAIL "no ACPI FADT found"
1:  cmpl $FADT_SLEEP_CONTROL + 12, 4(%rax)
    jae 2f
    FAIL "the FADT is too short for SLEEP_CONTROL_REG (needs ACPI 5.0+, length >= 256)"
2:  lea FADT_SLEEP_CONTROL(%rax), %rdi
    PUTS "poweroff: SLEEP_CONTROL_REG is "
    call acpi_gas_check
    PUTS "\n"
    mov %rdi, %rax
    ret

spin:                               # CPL3: RDI iterations of nothing
    dec %rdi
    jnz spin
    ret

    .section .note.GNU-stack, "", @progbits
