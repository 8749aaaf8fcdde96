# guests/common/lib32.S - COM1 output and debug-exit for 32-bit code (any CPL with port access).

    .include "guest.inc"

    .text
    .code32

# Programs COM1 for 115200 8N1 with FIFOs (7 port writes). Clobbers EAX, EDX.
    .globl serial_init32
serial_init32:
    mov $COM1 + 1, %dx
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
    mov $COM1 + 2, %dx
    mov $0xc7, %al
    out %al, %dx                    # FCR: enable and clear FIFOs
    mov $COM1 + 4, %dx
    mov $0x0b, %al
    out %al, %dx                    # MCR: DTR, RTS, OUT2
    ret

# Prints the byte in AL. Preserves all registers.
    .globl putc32
putc32:
    push %eax
    push %ecx
    push %edx
    mov %al, %ah
    mov $10000, %ecx                # bounded wait for THR empty
    mov $COM1_LSR, %dx
1:  in %dx, %al
    test $0x20, %al
    jnz 2f
    dec %ecx
    jnz 1b
2:  mov $COM1, %dx
    mov %ah, %al
    out %al, %dx
    pop %edx
    pop %ecx
    pop %eax
    ret

# Prints the NUL-terminated string at ESI. Preserves all registers.
    .globl puts32
puts32:
    push %eax
    push %esi
1:  lodsb
    test %al, %al
    jz 2f
    call putc32
    jmp 1b
2:  pop %esi
    pop %eax
    ret

# Ends the VM with the debug-exit value in AL; halts for good if the device is absent.
    .globl exit32
exit32:
    out %al, $DEBUG_EXIT_PORT
1:  cli
    hlt
    jmp 1b

    .section .note.GNU-stack, "", @progbits
