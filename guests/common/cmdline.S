# guests/common/cmdline.S - word options on the Multiboot command line (64-bit code, any CPL).
#
#   cmdline_has_token  RSI = NUL-terminated word (e.g. "method=acpi") -> RAX = 1 when some
#                      whitespace-separated token of the command line equals it exactly, else 0
#                      (also without a command line). The scan is bounded to 4096 characters.
# Preserves every register except RAX. (Numeric options: cmdline_get_u64 in lib64.S.)

    .include "guest.inc"

    .text
    .code64
    .globl cmdline_has_token
cmdline_has_token:
    push %rbx
    push %rcx
    push %rdx
    push %r8
    xor %eax, %eax
    mov mb_cmdline(%rip), %ebx
    test %ebx, %ebx
    jz .Lht_done
    lea 4096(%rbx), %r8             # scan limit
.Lht_token:                         # skip blanks up to the next token
    cmp %r8, %rbx
    jae .Lht_done
    movzbl (%rbx), %edx
    test %edx, %edx
    jz .Lht_done
    cmp $' ', %edx
    ja 1f
    inc %rbx
    jmp .Lht_token
1:  xor %ecx, %ecx                  # compare word[i] with token[i]
2:  movzbl (%rsi,%rcx), %edx
    test %edx, %edx
    jz 3f
    cmp (%rbx,%rcx), %dl
    jne .Lht_skip
    inc %rcx
    jmp 2b
3:  cmpb $' ', (%rbx,%rcx)          # the token must end here (NUL or blank)
    ja .Lht_skip
    mov $1, %eax
    jmp .Lht_done
.Lht_skip:                          # advance to the next blank or the end
    cmp %r8, %rbx
    jae .Lht_done
    movzbl (%rbx), %edx
    test %edx, %edx
    jz .Lht_done
    cmp $' ', %edx
    jbe .Lht_token
    inc %rbx
    jmp .Lht_skip
.Lht_done:
    pop %r8
    pop %rdx
    pop %rcx
    pop %rbx
    ret

    .section .note.GNU-stack, "", @progbits
