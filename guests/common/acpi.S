# guests/common/acpi.S - finding ACPI tables and writing FADT registers (64-bit code).
#
# acpi_find_table and acpi_gas_check only read memory, so they run at CPL3 as well as at CPL0
# (run them at CPL3: the RSDP scan is ~8000 iterations, which is slow where CPL0 is emulated).
# acpi_gas_write8 may need port I/O outside the TSS I/O bitmap: call it at CPL0.
#
#   acpi_find_table  EDI = signature (little-endian, e.g. "FACP" = 0x50434146) -> RAX = address
#                    of the first such table listed by the XSDT (RSDP revision >= 2 with a
#                    non-zero XSDT address) or else the RSDT; 0 when there is none.
#                    The RSDP is searched in the first KiB of the EBDA, then in 0xe0000-0xfffff
#                    (16-byte steps, "RSD PTR " and the 20-byte checksum).
#   acpi_gas_check   RDI = Generic Address Structure; FAILs (and ends the VM) unless it is
#                    system I/O (space 1) below 0x10000 or system memory (space 0) below 4 GiB,
#                    with a non-zero address; otherwise prints "io 0x..." or "memory 0x...".
#   acpi_gas_write8  RDI = Generic Address Structure (already checked), SIL = value: one byte
#                    `out` (space 1) or `mov` (space 0) to the address. CPL0.
# All preserve every register except RAX.

    .include "guest.inc"

    .set SIG_XSDT, 0x54445358       # "XSDT"
    .set SIG_RSDT, 0x54445352       # "RSDT"
    .set ACPI_TABLE_MAX, 0x10000    # bound on the root table length we are willing to walk

    .text
    .code64
    .globl acpi_find_table
acpi_find_table:
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    mov %edi, %r10d                 # wanted signature
    call acpi_find_rsdp
    test %rax, %rax
    jz .Lft_none
    mov %rax, %rbx
    cmpb $2, 15(%rbx)               # revision
    jb .Lft_rsdt
    mov 24(%rbx), %rsi              # XsdtAddress
    test %rsi, %rsi
    jz .Lft_rsdt
    mov $8, %r8d
    mov $SIG_XSDT, %edx
    jmp .Lft_root
.Lft_rsdt:
    mov 16(%rbx), %esi              # RsdtAddress
    mov $4, %r8d
    mov $SIG_RSDT, %edx
.Lft_root:
    mov %rsi, %rax
    shr $32, %rax
    jnz .Lft_none                   # beyond the identity map
    test %rsi, %rsi
    jz .Lft_none
    cmp %edx, (%rsi)
    jne .Lft_none
    mov 4(%rsi), %ecx               # length
    cmp $36, %ecx
    jb .Lft_none
    cmp $ACPI_TABLE_MAX, %ecx
    ja .Lft_none
    lea (%rsi,%rcx), %r9            # end of the entries
    lea 36(%rsi), %rbx              # first entry
.Lft_entry:
    lea (%rbx,%r8), %rax
    cmp %r9, %rax
    ja .Lft_none
    cmp $4, %r8d
    jne 1f
    mov (%rbx), %edi                # RSDT: 32-bit entries
    jmp 2f
1:  mov (%rbx), %rdi                # XSDT: 64-bit entries (possibly unaligned)
2:  add %r8, %rbx
    mov %rdi, %rax
    shr $32, %rax
    jnz .Lft_entry
    test %rdi, %rdi
    jz .Lft_entry
    cmp %r10d, (%rdi)
    jne .Lft_entry
    mov %rdi, %rax
    jmp .Lft_done
.Lft_none:
    xor %eax, %eax
.Lft_done:
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    ret

# RAX = address of a valid RSDP or 0. Clobbers RCX, RDX, RSI, RDI.
acpi_find_rsdp:
    movzwl 0x40e, %esi              # EBDA segment (BIOS data area), if the loader set one
    shl $4, %esi
    cmp $0x80000, %esi
    jb 1f
    cmp $0x9fc00, %esi
    ja 1f
    lea 1024(%rsi), %edi
    call acpi_scan_rsdp
    test %rax, %rax
    jnz 2f
1:  mov $0xe0000, %esi
    mov $0x100000, %edi
    call acpi_scan_rsdp
2:  ret

# Scans [RSI, RDI) in 16-byte steps; RAX = RSDP address or 0. Clobbers RCX, RDX, RSI.
acpi_scan_rsdp:
    mov $0x2052545020445352, %rdx   # "RSD PTR "
1:  cmp %rdi, %rsi
    jae 4f
    cmp %rdx, (%rsi)
    jne 3f
    xor %ecx, %ecx
    xor %eax, %eax
2:  add (%rsi,%rcx), %al            # checksum of the ACPI 1.0 part (20 bytes)
    inc %ecx
    cmp $20, %ecx
    jb 2b
    test %al, %al
    jnz 3f
    mov %rsi, %rax
    ret
3:  add $16, %rsi
    jmp 1b
4:  xor %eax, %eax
    ret

    .globl acpi_gas_check
acpi_gas_check:
    push %rdx
    mov 4(%rdi), %rdx               # address
    test %rdx, %rdx
    jnz 1f
    FAIL "the register's Generic Address Structure has address 0"
1:  cmpb $1, (%rdi)                 # address space id
    jne 2f
    cmp $0xffff, %rdx
    jbe 3f
    FAIL "system I/O address above 0xffff"
3:  PUTS "io "
    jmp 5f
2:  cmpb $0, (%rdi)
    je 4f
    FAIL "the register is in an address space other than system I/O or memory"
4:  mov %rdx, %rax
    shr $32, %rax
    jz 6f
    FAIL "the register is above 4 GiB (outside this guest's identity map)"
6:  PUTS "memory "
5:  PUTHEX %rdx
    pop %rdx
    ret

    .globl acpi_gas_write8
acpi_gas_write8:
    push %rdx
    mov 4(%rdi), %rdx
    mov %esi, %eax
    cmpb $1, (%rdi)
    jne 1f
    out %al, %dx
    jmp 2f
1:  mov %al, (%rdx)
2:  pop %rdx
    ret

    .section .note.GNU-stack, "", @progbits
