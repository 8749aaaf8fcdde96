# guests/common/lib64.S - printing, command line and exit for 64-bit code at any CPL.
#
# Only ports the TSS I/O bitmap opens to CPL3 are used (COM1 0x3f8-0x3ff and 0xf4), so every
# routine here works at CPL0 and CPL3 alike. Unless noted, routines preserve all registers.

    .include "guest.inc"

    .text
    .code64

# putc: prints the byte in DIL (polls LSR.THRE first, bounded).
    .globl putc
putc:
    push %rax
    push %rcx
    push %rdx
    mov $10000, %ecx
    mov $COM1_LSR, %edx
1:  in %dx, %al
    test $0x20, %al
    jnz 2f
    dec %ecx
    jnz 1b
2:  mov $COM1, %edx
    mov %edi, %eax
    out %al, %dx
    pop %rdx
    pop %rcx
    pop %rax
    ret

# puts: prints the NUL-terminated string at RSI.
    .globl puts
puts:
    push %rdi
    push %rsi
1:  movzbl (%rsi), %edi
    test %edi, %edi
    jz 2f
    call putc
    inc %rsi
    jmp 1b
2:  pop %rsi
    pop %rdi
    ret

# print_dec: prints RDI as an unsigned decimal number.
    .globl print_dec
print_dec:
    push %rax
    push %rcx
    push %rdx
    push %rdi
    push %rsi
    sub $32, %rsp
    lea 31(%rsp), %rsi
    movb $0, (%rsi)
    mov %rdi, %rax
    mov $10, %ecx
1:  xor %edx, %edx
    div %rcx
    add $'0', %dl
    dec %rsi
    mov %dl, (%rsi)
    test %rax, %rax
    jnz 1b
    call puts
    add $32, %rsp
    pop %rsi
    pop %rdi
    pop %rdx
    pop %rcx
    pop %rax
    ret

# print_hex: prints RDI as 0x followed by 16 hexadecimal digits.
    .globl print_hex
print_hex:
    push %rcx
    push %rdx
    push %rdi
    mov %rdi, %rdx
    mov $'0', %edi
    call putc
    mov $'x', %edi
    call putc
    mov $16, %ecx
1:  rol $4, %rdx
    mov %edx, %edi
    and $0xf, %edi
    cmp $10, %edi
    jb 2f
    add $'a' - '0' - 10, %edi
2:  add $'0', %edi
    call putc
    dec %ecx
    jnz 1b
    pop %rdi
    pop %rdx
    pop %rcx
    ret

# cmdline_get_u64: RSI = NUL-terminated key, RDI = default -> RAX = value of the first
# whitespace-separated `key=<decimal>` token of the Multiboot command line, or the default when
# there is no command line, no such token, or the value does not start with a digit.
# Values wrap modulo 2^64. The scan is bounded to 4096 characters.
    .globl cmdline_get_u64
cmdline_get_u64:
    push %rbx
    push %rcx
    push %rdx
    push %r8
    mov %rdi, %rax                  # result = default
    mov mb_cmdline(%rip), %ebx            # physical = virtual (identity map)
    test %ebx, %ebx
    jz .Lcl_done
    lea 4096(%rbx), %r8             # scan limit
.Lcl_token:                         # RBX at a token boundary candidate: skip blanks
    cmp %r8, %rbx
    jae .Lcl_done
    movzbl (%rbx), %edx
    test %edx, %edx
    jz .Lcl_done
    cmp $' ', %edx
    jbe .Lcl_blank                  # space, tab, newline and other control characters
    xor %ecx, %ecx                  # compare key[i] with token[i]
.Lcl_cmp:
    movzbl (%rsi,%rcx), %edx
    test %edx, %edx
    jz .Lcl_key_end
    cmp (%rbx,%rcx), %dl
    jne .Lcl_skip
    inc %rcx
    jmp .Lcl_cmp
.Lcl_key_end:
    cmpb $'=', (%rbx,%rcx)
    jne .Lcl_skip
    lea 1(%rbx,%rcx), %rbx          # value
    movzbl (%rbx), %edx
    sub $'0', %edx
    cmp $9, %edx
    ja .Lcl_skip                    # not a number: look further
    xor %eax, %eax
.Lcl_digit:
    imul $10, %rax, %rax
    add %rdx, %rax
    inc %rbx
    movzbl (%rbx), %edx
    sub $'0', %edx
    cmp $9, %edx
    jbe .Lcl_digit
    jmp .Lcl_done
.Lcl_blank:
    inc %rbx
    jmp .Lcl_token
.Lcl_skip:                          # advance to the next blank or the end
    cmp %r8, %rbx
    jae .Lcl_done
    movzbl (%rbx), %edx
    test %edx, %edx
    jz .Lcl_done
    cmp $' ', %edx
    jbe .Lcl_token
    inc %rbx
    jmp .Lcl_skip
.Lcl_done:
    pop %r8
    pop %rdx
    pop %rcx
    pop %rbx
    ret

# exit_pass / exit_fail: end the VM through the debug-exit port (status 33 / 35). If the port
# does nothing, halt for good: directly at CPL0, through the int3 gate at CPL3.
    .globl exit_pass, exit_fail
exit_pass:
    mov $EXIT_PASS, %eax
    jmp 1f
exit_fail:
    mov $EXIT_FAIL, %eax
1:  out %al, $DEBUG_EXIT_PORT
    mov %cs, %eax
    test $3, %eax
    jnz user_halt_stub
2:  cli
    hlt
    jmp 2b

# spin_lock / spin_unlock: RDI = address of a 32-bit lock word (0 = free).
    .globl spin_lock, spin_unlock
spin_lock:
    push %rax
1:  mov $1, %eax
    xchg %eax, (%rdi)
    test %eax, %eax
    jz 3f
2:  pause
    cmpl $0, (%rdi)
    jne 2b
    jmp 1b
3:  pop %rax
    ret
spin_unlock:
    movl $0, (%rdi)
    ret

    .section .note.GNU-stack, "", @progbits
