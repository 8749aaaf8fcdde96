# guests/reset.S - resets the machine: through the i8042 (command 0xFE on port 0x64 pulses the
# CPU reset line), with method=acpi through the FADT's RESET_REG, or with method=vector by jumping
# to the legacy reset vector F000:FFF0 (physical 0xffff0), where a PC's firmware starts and Vessel
# has its reset stub (src/arch/x86/reset_stub.h; Linux's default reboot ends there).
#
# With method=acpi it walks RSDP -> XSDT (or RSDT) -> FADT at CPL3, requires the RESET_REG_SUP
# flag (FADT flags bit 10) and writes RESET_VALUE (offset 128) to RESET_REG (Generic Address
# Structure at offset 116) at CPL0. The i8042 path first waits (bounded) for the controller's
# input buffer to be empty (status bit 1), as firmware and Linux do. After a reboot the guest
# starts from scratch and prints its banner again; Vessel with --no-reboot exits with status 0
# instead. If the guest is still running after a short CPL3 spin (~1e8 iterations), the reset
# did nothing.
#
# Output:   reset: via i8042
#      or   reset: via ACPI reset register
#           reset: RESET_REG is io 0x... (or memory 0x...), value 0x...
#      or   reset: via the reset vector F000:FFF0
# Failure:  FAIL: still running after the reset   (debug-exit 0x11, status 35), and FAIL: lines
#           about missing or unusable ACPI tables
# Options:  method=acpi   reset through the FADT's RESET_REG instead of the i8042
#           method=vector jump (CPL0, 64-bit mode) to physical 0xffff0. Vessel-specific: Vessel's stub
#                         decodes the same in every mode; a real firmware there expects real mode.
#                         If nothing resets, the vCPU stays halted there (no FAIL line).

    .include "guest.inc"

    .set SIG_FACP,              0x50434146  # "FACP"
    .set FADT_FLAGS,            112
    .set FADT_RESET_REG_SUP,    1 << 10
    .set FADT_RESET_REG,        116         # Generic Address Structure, 12 bytes
    .set FADT_RESET_VALUE,      128
    .set I8042_STATUS,          0x64
    .set I8042_INPUT_FULL,      0x02
    .set I8042_PULSE_RESET,     0xfe
    .set SPIN_ITERATIONS,       100000000
    .set RESET_VECTOR,          0xffff0     # F000:FFF0
    .set PREPARE_VECTOR,        1           # prepare's answer for method=vector (never a FADT address)

    .text
    .code64
    .globl guest_main
guest_main:
    mov $prepare, %edi              # option parsing, banner and table walk run at CPL3
    xor %esi, %esi
    call call_user
    cmp $PREPARE_VECTOR, %rax
    je 5f
    test %rax, %rax
    jz 3f
    lea FADT_RESET_REG(%rax), %rdi  # ACPI: CPL0 (the port is outside the TSS I/O bitmap)
    movzbl FADT_RESET_VALUE(%rax), %esi
    call acpi_gas_write8
    jmp 4f
3:  mov $1000, %ecx                 # i8042: wait for an empty input buffer, bounded
1:  in $I8042_STATUS, %al
    test $I8042_INPUT_FULL, %al
    jz 2f
    dec %ecx
    jnz 1b
2:  mov $I8042_PULSE_RESET, %al
    out %al, $I8042_STATUS
4:  mov $spin, %edi
    mov $SPIN_ITERATIONS, %esi
    call call_user
    FAIL "still running after the reset"
5:  mov $RESET_VECTOR, %eax         # vector: identity-mapped, executable at CPL0
    jmp *%rax

prepare:                            # CPL3 -> RAX = FADT for method=acpi, PREPARE_VECTOR, 0 for the i8042
    mov $word_method_vector, %esi
    call cmdline_has_token
    test %rax, %rax
    jz 0f
    PUTS "reset: via the reset vector F000:FFF0\n"
    mov $PREPARE_VECTOR, %eax
    ret
0:  mov $word_method_acpi, %esi
    call cmdline_has_token
    test %rax, %rax
    jnz 1f
    PUTS "reset: via i8042\n"
    xor %eax, %eax
    ret
1:  PUTS "reset: via ACPI reset register\n"
    mov $SIG_FACP, %edi
    call acpi_find_table
    test %rax, %rax
    jnz 2f
    FAIL "no ACPI FADT found"
2:  mov %rax, %rbx
    cmpl $FADT_RESET_VALUE + 1, 4(%rbx)
    jae 3f
    FAIL "the FADT is too short for RESET_REG (ACPI 2.0+)"
3:  testl $FADT_RESET_REG_SUP, FADT_FLAGS(%rbx)
    jnz 4f
    FAIL "the FADT does not set RESET_REG_SUP"
4:  lea FADT_RESET_REG(%rbx), %rdi
    PUTS "reset: RESET_REG is "
    call acpi_gas_check
    PUTS ", value "
    movzbl FADT_RESET_VALUE(%rbx), %eax
    PUTHEX %rax
    PUTS "\n"
    mov %rbx, %rax
    ret

spin:                               # CPL3: RDI iterations of nothing
    dec %rdi
    jnz spin
    ret

    .section .rodata
word_method_acpi:
    .asciz "method=acpi"
word_method_vector:
    .asciz "method=vector"

    .section .note.GNU-stack, "", @progbits
