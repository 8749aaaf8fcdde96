#include <gtest/gtest.h>

#include <initializer_list>
#include <vector>

#include <xbyak/xbyak.h>

#include "engine/soft/decoder.h"
#include "engine/soft/exec_fast.h"
#include "engine/soft/handlers.h"

using namespace vessel::soft;

namespace {

using Status = Decoder::Status;

const Decoder& decoder()
{
    static const Decoder d;
    return d;
}

// Decodes `bytes`, expecting success and that the instruction spans all of them.
Insn decode_ok(CpuMode mode, std::initializer_list<uint8_t> bytes)
{
    std::vector<uint8_t> b(bytes);
    Insn in;
    Status s = decoder().decode(mode, b.data(), b.size(), in);
    EXPECT_EQ(s, Status::Ok);
    EXPECT_EQ(in.length, b.size());
    return in;
}

Insn d64(std::initializer_list<uint8_t> bytes)
{
    return decode_ok(CpuMode::Long64, bytes);
}
Insn d32(std::initializer_list<uint8_t> bytes)
{
    return decode_ok(CpuMode::Prot32, bytes);
}
Insn d16(std::initializer_list<uint8_t> bytes)
{
    return decode_ok(CpuMode::Prot16, bytes);
}
Insn dreal(std::initializer_list<uint8_t> bytes)
{
    return decode_ok(CpuMode::Real, bytes);
}

Status status_of(CpuMode mode, std::initializer_list<uint8_t> bytes)
{
    std::vector<uint8_t> b(bytes);
    Insn in;
    return decoder().decode(mode, b.data(), b.size(), in);
}

// Decodes the first instruction Xbyak emitted (64-bit code).
Insn dx(const Xbyak::CodeGenerator& g)
{
    Insn in;
    EXPECT_EQ(decoder().decode(CpuMode::Long64, g.getCode(), g.getSize(), in), Status::Ok);
    EXPECT_EQ(in.length, g.getSize());
    return in;
}

void expect_gpr(const Operand& o, unsigned reg, unsigned size)
{
    EXPECT_EQ(o.kind, OpKind::Gpr);
    EXPECT_EQ(o.reg, reg);
    EXPECT_EQ(o.size, size);
}

constexpr uint8_t RAX = 0, RCX = 1, RDX = 2, RBX = 3, RSP = 4, RBP = 5, RSI = 6, RDI = 7;

bool ends(const Insn& in)
{
    return in.flags & kFlagEndsBlock;
}

} // namespace

TEST(SoftDecoder, BasicAluAndHandler)
{
    Insn in = d64({ 0x48, 0x01, 0xc8 }); // add rax, rcx
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_ADD);
    EXPECT_EQ(in.osize, 8);
    EXPECT_EQ(in.asize, 8);
    EXPECT_EQ(in.nops, 2);
    expect_gpr(in.op[0], RAX, 8);
    expect_gpr(in.op[1], RCX, 8);
    EXPECT_EQ(in.opcode, 0x01);
    EXPECT_EQ(in.opmap, 0);
    EXPECT_EQ(in.modrm_reg, 1);
    EXPECT_TRUE(in.flags & kFlagRex);
    EXPECT_TRUE(in.flags & kFlagRexW);
    EXPECT_FALSE(ends(in));
    // The generic handler, or the decode-time specialisation of this form (exec_fast.h).
    ExecFn fast = specialize(in);
    EXPECT_EQ(in.exec, fast ? fast : handler_table()[ZYDIS_MNEMONIC_ADD]);
    EXPECT_NE(in.exec, nullptr);
}

TEST(SoftDecoder, OperandSizePrefixes)
{
    Insn in = d64({ 0x66, 0x48, 0x01, 0xc8 }); // add rax, rcx (REX.W wins over 66)
    EXPECT_EQ(in.osize, 8);
    EXPECT_TRUE(in.flags & kFlagOpsizePrefix);
    expect_gpr(in.op[0], RAX, 8);

    in = d64({ 0x66, 0x01, 0xc8 }); // add ax, cx
    EXPECT_EQ(in.osize, 2);
    expect_gpr(in.op[1], RCX, 2);
    EXPECT_FALSE(in.flags & kFlagRex);

    in = d64({ 0x01, 0xc8 }); // add eax, ecx
    EXPECT_EQ(in.osize, 4);
    EXPECT_FALSE(in.flags & kFlagOpsizePrefix);

    in = d16({ 0x01, 0xc8 }); // add ax, cx
    EXPECT_EQ(in.osize, 2);
    EXPECT_EQ(in.asize, 2);
    in = d16({ 0x66, 0x01, 0xc8 }); // add eax, ecx
    EXPECT_EQ(in.osize, 4);
    in = dreal({ 0x66, 0x67, 0x8b, 0x04, 0x24 }); // mov eax, [esp]
    EXPECT_EQ(in.osize, 4);
    EXPECT_EQ(in.asize, 4);
    EXPECT_EQ(in.base, RSP);
    EXPECT_EQ(in.seg, SS);

    in = d32({ 0x66, 0x01, 0xc8 }); // add ax, cx
    EXPECT_EQ(in.osize, 2);
    EXPECT_EQ(in.asize, 4);
    in = d32({ 0x67, 0x8b, 0x07 }); // mov eax, [bx]
    EXPECT_EQ(in.asize, 2);
    EXPECT_EQ(in.base, RBX);
    EXPECT_EQ(in.index, kNoReg);

    in = d64({ 0x67, 0x8b, 0x07 }); // mov eax, [edi]
    EXPECT_EQ(in.asize, 4);
    EXPECT_EQ(in.base, RDI);
    EXPECT_EQ(in.seg, DS);
}

TEST(SoftDecoder, ByteRegisters)
{
    Insn in = d64({ 0x88, 0xe0 }); // mov al, ah
    expect_gpr(in.op[0], RAX, 1);
    EXPECT_EQ(in.op[1].kind, OpKind::GprHigh8);
    EXPECT_EQ(in.op[1].reg, 0);
    EXPECT_EQ(in.osize, 1);

    in = d64({ 0x88, 0xfb }); // mov bl, bh
    EXPECT_EQ(in.op[1].kind, OpKind::GprHigh8);
    EXPECT_EQ(in.op[1].reg, 3);

    in = d64({ 0x40, 0x88, 0xe0 }); // mov al, spl
    expect_gpr(in.op[1], RSP, 1);
    in = d64({ 0x40, 0x88, 0xff }); // mov dil, dil
    expect_gpr(in.op[0], RDI, 1);
    in = d64({ 0x45, 0x88, 0xc8 }); // mov r8b, r9b
    expect_gpr(in.op[0], 8, 1);
    expect_gpr(in.op[1], 9, 1);
    in = d64({ 0x4d, 0x01, 0xfe }); // add r14, r15
    expect_gpr(in.op[0], 14, 8);
    expect_gpr(in.op[1], 15, 8);
    in = d64({ 0x44, 0x01, 0xf8 }); // add eax, r15d
    expect_gpr(in.op[1], 15, 4);
}

TEST(SoftDecoder, RepAndMandatoryPrefixes)
{
    Insn in = d64({ 0xf3, 0xa4 }); // rep movsb
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_MOVSB);
    EXPECT_TRUE(in.flags & kFlagRep);
    EXPECT_FALSE(in.flags & kFlagRepne);
    EXPECT_EQ(in.osize, 1);
    EXPECT_EQ(in.nops, 0);
    EXPECT_EQ(in.seg, DS);
    EXPECT_FALSE(in.flags & kFlagHasMem);
    EXPECT_TRUE(ends(in));

    in = d64({ 0xa4 }); // movsb without rep: no block end
    EXPECT_FALSE(in.flags & kFlagRep);
    EXPECT_FALSE(ends(in));

    in = d64({ 0xf2, 0xae }); // repne scasb
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_SCASB);
    EXPECT_TRUE(in.flags & kFlagRepne);
    EXPECT_FALSE(in.flags & kFlagRep);
    EXPECT_TRUE(ends(in));

    in = d64({ 0xf3, 0xa6 }); // repe cmpsb
    EXPECT_TRUE(in.flags & kFlagRep);

    in = d64({ 0xf3, 0x48, 0xab }); // rep stosq
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_STOSQ);
    EXPECT_EQ(in.osize, 8);
    EXPECT_TRUE(in.flags & kFlagRep);

    in = d64({ 0x66, 0xa5 }); // movsw
    EXPECT_EQ(in.osize, 2);
    in = d64({ 0x67, 0xa5 }); // movsd with esi/edi
    EXPECT_EQ(in.osize, 4);
    EXPECT_EQ(in.asize, 4);

    in = d64({ 0xf3, 0x0f, 0x6f, 0x00 }); // movdqu xmm0, [rax]
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_MOVDQU);
    EXPECT_FALSE(in.flags & (kFlagRep | kFlagRepne));
    EXPECT_FALSE(ends(in));
    EXPECT_EQ(in.op[0].kind, OpKind::Xmm);
    EXPECT_EQ(in.op[0].size, 16);
    EXPECT_EQ(in.op[1].kind, OpKind::Mem);
    EXPECT_EQ(in.op[1].size, 16);
    EXPECT_EQ(in.osize, 16);
    EXPECT_EQ(in.opmap, 1);
    EXPECT_EQ(in.opcode, 0x6f);

    in = d64({ 0xf2, 0x0f, 0x10, 0xc1 }); // movsd xmm0, xmm1
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_MOVSD);
    EXPECT_FALSE(in.flags & (kFlagRep | kFlagRepne));
    EXPECT_EQ(in.op[0].kind, OpKind::Xmm);
    EXPECT_EQ(in.op[1].kind, OpKind::Xmm);
    EXPECT_EQ(in.op[1].reg, 1);

    in = d64({ 0x66, 0x0f, 0x6f, 0xc1 }); // movdqa xmm0, xmm1: 66 is mandatory here
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_MOVDQA);
    EXPECT_FALSE(in.flags & kFlagOpsizePrefix);

    in = d64({ 0x66, 0x45, 0x0f, 0xef, 0xc1 }); // pxor xmm8, xmm9
    EXPECT_EQ(in.op[0].reg, 8);
    EXPECT_EQ(in.op[1].reg, 9);

    in = d64({ 0xf3, 0x90 }); // pause
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_PAUSE);
    EXPECT_FALSE(in.flags & kFlagRep);
    EXPECT_TRUE(ends(in));

    in = d64({ 0xf3, 0xc3 }); // rep ret: the F3 is ignored
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_RET);
    EXPECT_FALSE(in.flags & kFlagRep);

    in = d64({ 0xf3, 0x0f, 0xbc, 0xc1 }); // rep bsf eax, ecx = TZCNT, executed as BSF
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_BSF);
    EXPECT_FALSE(in.flags & kFlagRep);

    in = d64({ 0xf3, 0x0f, 0xbd, 0xc1 }); // lzcnt eax, ecx: CPUID advertises LZCNT
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_LZCNT);
    EXPECT_FALSE(in.flags & kFlagRep);
    in = d64({ 0xf3, 0x0f, 0x1e, 0xfa }); // endbr64: a hint NOP without CET
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_NOP);
    EXPECT_FALSE(in.flags & kFlagRep);
    in = d64({ 0x0f, 0x1a, 0x00 }); // bndldx encoding: a hint NOP without MPX
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_NOP);
    in = d64({ 0xf2, 0xc3 }); // bnd ret
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_RET);
    EXPECT_FALSE(in.flags & kFlagRepne);
    in = d64({ 0x0f, 0x1f, 0x44, 0x00, 0x00 }); // nop dword [rax+rax]
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_NOP);
    EXPECT_FALSE(ends(in));

    in = d64({ 0xf0, 0x48, 0x0f, 0xb1, 0x0f }); // lock cmpxchg [rdi], rcx
    EXPECT_TRUE(in.flags & kFlagLock);
    EXPECT_TRUE(in.flags & kFlagHasMem);
    EXPECT_EQ(in.nops, 2);
    EXPECT_EQ(in.op[0].size, 8);

    in = d64({ 0xf3, 0x6c }); // rep insb
    EXPECT_TRUE(in.flags & kFlagRep);
    EXPECT_TRUE(ends(in));
}

TEST(SoftDecoder, StringSegmentOverride)
{
    Insn in = d64({ 0x64, 0xa4 }); // movsb with fs: source
    EXPECT_EQ(in.seg, FS);
    EXPECT_TRUE(in.flags & kFlagSegOverride);
    in = d32({ 0x2e, 0xac }); // lods cs:
    EXPECT_EQ(in.seg, CS);
    in = d16({ 0x26, 0xa5 }); // movsw es:
    EXPECT_EQ(in.seg, ES);
    in = d16({ 0xd7 }); // xlat
    EXPECT_EQ(in.seg, DS);
    EXPECT_EQ(in.nops, 0);
}

TEST(SoftDecoder, MemoryOperands)
{
    // mov rax, [rip+4]
    Insn in = d64({ 0x48, 0x8b, 0x05, 0x04, 0x00, 0x00, 0x00 });
    EXPECT_EQ(in.base, kRipReg);
    EXPECT_EQ(in.index, kNoReg);
    EXPECT_EQ(in.disp, 4);
    EXPECT_EQ(in.seg, DS);
    EXPECT_TRUE(in.flags & kFlagHasMem);
    EXPECT_EQ(in.op[1].kind, OpKind::Mem);
    EXPECT_EQ(in.op[1].size, 8);

    in = d64({ 0x8b, 0x44, 0x24, 0x08 }); // mov eax, [rsp+8]
    EXPECT_EQ(in.base, RSP);
    EXPECT_EQ(in.seg, SS);
    EXPECT_EQ(in.disp, 8);
    EXPECT_EQ(in.scale, 1);

    in = d64({ 0x8b, 0x45, 0xf8 }); // mov eax, [rbp-8]
    EXPECT_EQ(in.base, RBP);
    EXPECT_EQ(in.seg, SS);
    EXPECT_EQ(in.disp, -8);

    in = d64({ 0x42, 0x8b, 0x44, 0xb3, 0x10 }); // mov eax, [rbx+r14*4+0x10]
    EXPECT_EQ(in.base, RBX);
    EXPECT_EQ(in.index, 14);
    EXPECT_EQ(in.scale, 4);
    EXPECT_EQ(in.disp, 0x10);
    EXPECT_EQ(in.seg, DS);

    in = d64({ 0x8b, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00 }); // mov eax, [0x1000] (SIB, no base)
    EXPECT_EQ(in.base, kNoReg);
    EXPECT_EQ(in.index, kNoReg);
    EXPECT_EQ(in.disp, 0x1000);
    EXPECT_EQ(in.scale, 1);

    in = d64({ 0x8b, 0x04, 0xcd, 0xf0, 0xff, 0xff, 0xff }); // mov eax, [rcx*8-0x10]
    EXPECT_EQ(in.base, kNoReg);
    EXPECT_EQ(in.index, RCX);
    EXPECT_EQ(in.scale, 8);
    EXPECT_EQ(in.disp, -0x10);

    // mov rax, fs:[0x28]
    in = d64({ 0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00 });
    EXPECT_EQ(in.seg, FS);
    EXPECT_TRUE(in.flags & kFlagSegOverride);
    in = d64({ 0x65, 0x48, 0x8b, 0x04, 0x24 }); // mov rax, gs:[rsp]
    EXPECT_EQ(in.seg, GS);
    EXPECT_EQ(in.base, RSP);

    in = d32({ 0x8b, 0x05, 0x00, 0x00, 0x10, 0x00 }); // mov eax, [0x100000] (no RIP in 32-bit)
    EXPECT_EQ(in.base, kNoReg);
    EXPECT_EQ(in.disp, 0x100000);
    in = d32({ 0x26, 0x8b, 0x00 }); // mov eax, es:[eax]
    EXPECT_EQ(in.seg, ES);
    in = d32({ 0x8b, 0x45, 0x08 }); // mov eax, [ebp+8]
    EXPECT_EQ(in.seg, SS);
    EXPECT_EQ(in.base, RBP);
    in = d32({ 0x3e, 0x8b, 0x45, 0x08 }); // mov eax, ds:[ebp+8]
    EXPECT_EQ(in.seg, DS);

    in = d16({ 0x8b, 0x43, 0x08 }); // mov ax, [bp+di+8]
    EXPECT_EQ(in.base, RBP);
    EXPECT_EQ(in.index, RDI);
    EXPECT_EQ(in.scale, 1);
    EXPECT_EQ(in.disp, 8);
    EXPECT_EQ(in.seg, SS);
    EXPECT_EQ(in.asize, 2);
    in = dreal({ 0x8b, 0x00 }); // mov ax, [bx+si]
    EXPECT_EQ(in.base, RBX);
    EXPECT_EQ(in.index, RSI);
    EXPECT_EQ(in.seg, DS);
    in = dreal({ 0x8b, 0x46, 0xfe }); // mov ax, [bp-2]
    EXPECT_EQ(in.base, RBP);
    EXPECT_EQ(in.index, kNoReg);
    EXPECT_EQ(in.seg, SS);
    EXPECT_EQ(in.disp, -2);
    in = dreal({ 0x8b, 0x06, 0x34, 0x12 }); // mov ax, [0x1234]
    EXPECT_EQ(in.base, kNoReg);
    EXPECT_EQ(in.disp, 0x1234);

    in = d64({ 0x48, 0x8d, 0x44, 0x24, 0x08 }); // lea rax, [rsp+8]
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_LEA);
    EXPECT_EQ(in.op[1].kind, OpKind::Mem);
    EXPECT_EQ(in.op[1].size, 8);
    in = d64({ 0x8d, 0x04, 0x08 }); // lea eax, [rax+rcx]
    EXPECT_EQ(in.op[1].size, 4);
    EXPECT_EQ(in.index, RCX);
    in = d64({ 0x67, 0x48, 0x8d, 0x00 }); // lea rax, [eax]
    EXPECT_EQ(in.op[1].size, 8);
    EXPECT_EQ(in.asize, 4);

    in = d64({ 0x0f, 0xb6, 0x00 }); // movzx eax, byte [rax]
    EXPECT_EQ(in.osize, 4);
    expect_gpr(in.op[0], RAX, 4);
    EXPECT_EQ(in.op[1].size, 1);

    in = d64({ 0x0f, 0x01, 0x10 }); // lgdt [rax]
    EXPECT_EQ(in.op[0].size, 10);
    EXPECT_EQ(in.nops, 1);
    EXPECT_TRUE(ends(in));
    in = d32({ 0x0f, 0x01, 0x18 }); // lidt [eax]
    EXPECT_EQ(in.op[0].size, 6);
    in = d64({ 0x0f, 0xae, 0x00 }); // fxsave [rax]: 512 bytes do not fit
    EXPECT_EQ(in.op[0].kind, OpKind::Mem);
    EXPECT_EQ(in.op[0].size, 0);
    in = d64({ 0x48, 0x0f, 0xc7, 0x0f }); // cmpxchg16b [rdi]
    EXPECT_EQ(in.op[0].size, 16);
    EXPECT_EQ(in.nops, 1);
    in = d64({ 0x0f, 0x01, 0x38 }); // invlpg [rax]
    EXPECT_EQ(in.op[0].kind, OpKind::Mem);
    EXPECT_TRUE(ends(in));
}

TEST(SoftDecoder, Immediates)
{
    Insn in = d64({ 0x48, 0x83, 0xc0, 0xf0 }); // add rax, -16
    EXPECT_EQ(in.nops, 2);
    EXPECT_EQ(in.op[1].kind, OpKind::Imm);
    EXPECT_EQ(in.op[1].size, 8);
    EXPECT_EQ(in.imm, 0xfffffffffffffff0ULL);
    EXPECT_EQ(in.modrm_reg, 0);

    in = d64({ 0x83, 0xc0, 0xf0 }); // add eax, -16
    EXPECT_EQ(in.op[1].size, 4);
    EXPECT_EQ(in.imm & 0xffffffff, 0xfffffff0ULL);
    in = d64({ 0x66, 0x83, 0xc0, 0xf0 }); // add ax, -16
    EXPECT_EQ(in.op[1].size, 2);
    EXPECT_EQ(in.imm & 0xffff, 0xfff0ULL);
    in = d64({ 0x83, 0xf9, 0x05 }); // cmp ecx, 5
    EXPECT_EQ(in.modrm_reg, 7);
    EXPECT_EQ(in.imm, 5u);

    in = d64({ 0x6a, 0xf0 }); // push -16
    EXPECT_EQ(in.osize, 8);
    EXPECT_EQ(in.nops, 1);
    EXPECT_EQ(in.op[0].size, 8);
    EXPECT_EQ(in.imm, 0xfffffffffffffff0ULL);
    in = d32({ 0x6a, 0x80 }); // push -128
    EXPECT_EQ(in.op[0].size, 4);
    EXPECT_EQ(in.imm & 0xffffffff, 0xffffff80ULL);
    in = d16({ 0x6a, 0x80 }); // push -128 (16-bit)
    EXPECT_EQ(in.op[0].size, 2);
    EXPECT_EQ(in.osize, 2);

    // mov rax, 0x0123456789abcdef
    in = d64({ 0x48, 0xb8, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01 });
    EXPECT_EQ(in.imm, 0x0123456789abcdefULL);
    EXPECT_EQ(in.op[1].size, 8);
    in = d64({ 0x48, 0xc7, 0xc0, 0x00, 0x00, 0x00, 0x80 }); // mov rax, imm32 sign-extended
    EXPECT_EQ(in.imm, 0xffffffff80000000ULL);
    EXPECT_EQ(in.op[1].size, 8);

    in = d64({ 0x05, 0x05, 0x00, 0x00, 0x00 }); // add eax, 5 (EAX not encoded, still op0)
    EXPECT_EQ(in.nops, 2);
    expect_gpr(in.op[0], RAX, 4);
    EXPECT_EQ(in.op[1].kind, OpKind::Imm);
    EXPECT_EQ(in.imm, 5u);

    in = d64({ 0xa8, 0x10 }); // test al, 0x10
    expect_gpr(in.op[0], RAX, 1);
    EXPECT_EQ(in.op[1].size, 1);

    in = d64({ 0xcd, 0x80 }); // int 0x80
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_INT);
    EXPECT_EQ(in.nops, 1);
    EXPECT_EQ(in.op[0].kind, OpKind::Imm);
    EXPECT_EQ(in.op[0].size, 1);
    EXPECT_EQ(in.imm, 0x80u);
    EXPECT_TRUE(ends(in));

    in = d64({ 0xc1, 0xe0, 0x04 }); // shl eax, 4
    EXPECT_EQ(in.op[1].size, 1);
    EXPECT_EQ(in.imm, 4u);
    EXPECT_EQ(in.modrm_reg, 4);
    in = d64({ 0xd1, 0xe0 }); // shl eax, 1 (implicit count)
    EXPECT_EQ(in.nops, 2);
    EXPECT_EQ(in.op[1].kind, OpKind::Imm);
    EXPECT_EQ(in.imm, 1u);
    in = d64({ 0xd3, 0xe0 }); // shl eax, cl
    EXPECT_EQ(in.nops, 2);
    expect_gpr(in.op[1], RCX, 1);
    in = d64({ 0x0f, 0xa4, 0xc1, 0x03 }); // shld ecx, eax, 3
    EXPECT_EQ(in.nops, 3);
    EXPECT_EQ(in.op[2].kind, OpKind::Imm);
    EXPECT_EQ(in.imm, 3u);
    in = d64({ 0x0f, 0xba, 0xe0, 0xf0 }); // bt eax, 0xf0
    EXPECT_EQ(in.imm, 0xf0u);
    EXPECT_EQ(in.op[1].size, 1);

    in = d64({ 0x6b, 0xc1, 0xff }); // imul eax, ecx, -1
    EXPECT_EQ(in.nops, 3);
    EXPECT_EQ(in.op[2].size, 4);
    EXPECT_EQ(in.imm & 0xffffffff, 0xffffffffULL);

    in = d64({ 0xc8, 0x10, 0x00, 0x01 }); // enter 0x10, 1
    EXPECT_EQ(in.nops, 2);
    EXPECT_EQ(in.imm, 0x10u);
    EXPECT_EQ(in.imm2, 1u);
    EXPECT_EQ(in.op[0].size, 2);
    EXPECT_EQ(in.op[0].imm_index, 0);
    EXPECT_EQ(in.op[1].size, 1);
    EXPECT_EQ(in.op[1].imm_index, 1);
    in = d64({ 0xc8, 0xff, 0xff, 0x80 }); // enter 0xffff, 0x80: not sign-extended
    EXPECT_EQ(in.imm, 0xffffu);
    EXPECT_EQ(in.imm2, 0x80u);

    in = d64({ 0xc2, 0x00, 0x80 }); // ret 0x8000
    EXPECT_EQ(in.imm, 0x8000u);
    EXPECT_EQ(in.op[0].size, 2);
    EXPECT_TRUE(ends(in));

    in = d64({ 0x66, 0x0f, 0x70, 0xc1, 0x1b }); // pshufd xmm0, xmm1, 0x1b
    EXPECT_EQ(in.nops, 3);
    EXPECT_EQ(in.op[2].kind, OpKind::Imm);
    EXPECT_EQ(in.op[2].size, 1);
    EXPECT_EQ(in.imm, 0x1bu);
}

TEST(SoftDecoder, IoInstructions)
{
    Insn in = d64({ 0xec }); // in al, dx
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_IN);
    EXPECT_EQ(in.osize, 1);
    EXPECT_EQ(in.nops, 2);
    expect_gpr(in.op[0], RAX, 1);
    expect_gpr(in.op[1], RDX, 2);
    EXPECT_TRUE(ends(in));

    in = d64({ 0xe6, 0x80 }); // out 0x80, al
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_OUT);
    EXPECT_EQ(in.nops, 2);
    EXPECT_EQ(in.op[0].kind, OpKind::Imm);
    EXPECT_EQ(in.op[0].size, 1);
    EXPECT_EQ(in.imm, 0x80u);
    expect_gpr(in.op[1], RAX, 1);
    EXPECT_TRUE(ends(in));

    in = d32({ 0x66, 0xe5, 0x71 }); // in ax, 0x71
    EXPECT_EQ(in.osize, 2);
    expect_gpr(in.op[0], RAX, 2);
    EXPECT_EQ(in.imm, 0x71u);

    in = d64({ 0xef }); // out dx, eax
    EXPECT_EQ(in.osize, 4);
    expect_gpr(in.op[0], RDX, 2);
    expect_gpr(in.op[1], RAX, 4);

    in = d64({ 0x6e }); // outsb
    EXPECT_EQ(in.nops, 0);
    EXPECT_TRUE(ends(in));
}

TEST(SoftDecoder, RelativeBranches)
{
    Insn in = d64({ 0x74, 0xfe }); // jz $ (rel8 = -2)
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_JZ);
    EXPECT_TRUE(in.flags & kFlagRelBranch);
    EXPECT_EQ(static_cast<int64_t>(in.imm), -2);
    EXPECT_EQ(in.nops, 0);
    EXPECT_EQ(in.cond, 4);
    EXPECT_EQ(in.osize, 8);
    EXPECT_TRUE(ends(in));

    in = d64({ 0x0f, 0x8f, 0x00, 0x01, 0x00, 0x00 }); // jg +0x100 (rel32)
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_JNLE);
    EXPECT_EQ(in.imm, 0x100u);
    EXPECT_EQ(in.cond, 0xf);
    EXPECT_EQ(in.opmap, 1);
    EXPECT_EQ(in.nops, 0);

    in = d64({ 0x0f, 0x82, 0xf0, 0xff, 0xff, 0xff }); // jb -16
    EXPECT_EQ(static_cast<int64_t>(in.imm), -16);
    EXPECT_EQ(in.cond, 2);

    in = d64({ 0xe8, 0xfb, 0xff, 0xff, 0xff }); // call $ (rel32 = -5)
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_CALL);
    EXPECT_TRUE(in.flags & kFlagRelBranch);
    EXPECT_EQ(static_cast<int64_t>(in.imm), -5);
    EXPECT_EQ(in.nops, 0);
    EXPECT_TRUE(ends(in));

    in = d64({ 0xe9, 0x00, 0x00, 0x00, 0x80 }); // jmp rel32 (most negative)
    EXPECT_EQ(in.imm, 0xffffffff80000000ULL);
    in = d64({ 0xeb, 0x7f }); // jmp +127
    EXPECT_EQ(in.imm, 127u);

    in = d64({ 0xe2, 0xfe }); // loop $
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_LOOP);
    EXPECT_TRUE(in.flags & kFlagRelBranch);
    EXPECT_EQ(static_cast<int64_t>(in.imm), -2);
    EXPECT_EQ(in.asize, 8);
    EXPECT_EQ(in.cond, 0);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x67, 0xe2, 0xfd }); // loop with ecx
    EXPECT_EQ(in.asize, 4);
    in = d64({ 0xe1, 0x10 }); // loope
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_LOOPE);
    in = d64({ 0xe3, 0x10 }); // jrcxz
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_JRCXZ);
    EXPECT_TRUE(in.flags & kFlagRelBranch);
    EXPECT_EQ(in.imm, 0x10u);

    in = d16({ 0xe9, 0x00, 0x80 }); // jmp rel16 (-0x8000)
    EXPECT_EQ(static_cast<int64_t>(in.imm), -0x8000);
    EXPECT_EQ(in.osize, 2);
    in = d32({ 0x66, 0x0f, 0x84, 0x10, 0x00 }); // jz rel16 in 32-bit code
    EXPECT_EQ(in.osize, 2);
    EXPECT_EQ(in.imm, 0x10u);
    EXPECT_EQ(in.length, 5);

    in = d64({ 0xff, 0xd0 }); // call rax: not relative
    EXPECT_FALSE(in.flags & kFlagRelBranch);
    EXPECT_EQ(in.nops, 1);
    expect_gpr(in.op[0], RAX, 8);
    EXPECT_EQ(in.modrm_reg, 2);
    EXPECT_TRUE(ends(in));
    in = d64({ 0xff, 0x24, 0xc5, 0x00, 0x10, 0x00, 0x00 }); // jmp [rax*8+0x1000]
    EXPECT_EQ(in.op[0].kind, OpKind::Mem);
    EXPECT_EQ(in.op[0].size, 8);
    EXPECT_TRUE(ends(in));
}

TEST(SoftDecoder, FarTransfers)
{
    Insn in = d32({ 0xea, 0x78, 0x56, 0x34, 0x12, 0x10, 0x00 }); // jmp 0x10:0x12345678
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_JMP);
    EXPECT_EQ(in.nops, 1);
    EXPECT_EQ(in.op[0].kind, OpKind::Ptr);
    EXPECT_EQ(in.op[0].size, 6);
    EXPECT_EQ(in.imm, 0x12345678u);
    EXPECT_EQ(in.imm2, 0x10u);
    EXPECT_FALSE(in.flags & kFlagRelBranch);
    EXPECT_TRUE(ends(in));

    in = dreal({ 0xea, 0x00, 0x7c, 0x00, 0x00 }); // jmp 0:0x7c00
    EXPECT_EQ(in.op[0].kind, OpKind::Ptr);
    EXPECT_EQ(in.op[0].size, 4);
    EXPECT_EQ(in.imm, 0x7c00u);
    EXPECT_EQ(in.imm2, 0u);
    in = d16({ 0x66, 0xea, 0x00, 0x00, 0x10, 0x00, 0x08, 0x00 }); // jmp dword 8:0x100000
    EXPECT_EQ(in.op[0].size, 6);
    EXPECT_EQ(in.imm, 0x100000u);
    EXPECT_EQ(in.imm2, 8u);

    EXPECT_EQ(status_of(CpuMode::Long64, { 0xea, 0, 0, 0, 0, 0, 0 }), Status::Invalid); // no ptr16:32 in 64-bit

    in = d64({ 0x48, 0xff, 0x2c, 0x25, 0x00, 0x10, 0x00, 0x00 }); // jmp far [0x1000] (m16:64)
    EXPECT_EQ(in.op[0].kind, OpKind::Mem);
    EXPECT_EQ(in.op[0].size, 10);
    EXPECT_EQ(in.modrm_reg, 5);
    EXPECT_TRUE(ends(in));
    in = d64({ 0xff, 0x1f }); // call far [rdi] (m16:32)
    EXPECT_EQ(in.op[0].size, 6);
    EXPECT_TRUE(ends(in));
    in = d16({ 0xff, 0x2e, 0x00, 0x00 }); // jmp far [0] (m16:16)
    EXPECT_EQ(in.op[0].size, 4);

    in = d64({ 0xcb }); // retf
    EXPECT_TRUE(ends(in));
    in = d64({ 0x48, 0xcf }); // iretq
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_IRETQ);
    EXPECT_TRUE(ends(in));
    in = d32({ 0xc4, 0x00 }); // les eax, [eax] (C4 with a memory ModRM is LES, not VEX)
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_LES);
    EXPECT_EQ(in.op[1].size, 6);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x0f, 0xb2, 0x20 }); // lss esp, [rax]
    EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_LSS);
    EXPECT_TRUE(ends(in));
}

TEST(SoftDecoder, SystemRegisters)
{
    Insn in = d64({ 0x0f, 0x22, 0xc0 }); // mov cr0, rax
    EXPECT_EQ(in.op[0].kind, OpKind::Cr);
    EXPECT_EQ(in.op[0].reg, 0);
    expect_gpr(in.op[1], RAX, 8);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x0f, 0x22, 0xd8 }); // mov cr3, rax
    EXPECT_EQ(in.op[0].reg, 3);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x0f, 0x22, 0xe0 }); // mov cr4, rax
    EXPECT_EQ(in.op[0].reg, 4);
    in = d64({ 0x44, 0x0f, 0x22, 0xc0 }); // mov cr8, rax
    EXPECT_EQ(in.op[0].reg, 8);
    in = d32({ 0x0f, 0x22, 0xc0 }); // mov cr0, eax
    EXPECT_EQ(in.op[0].size, 4);
    expect_gpr(in.op[1], RAX, 4);
    in = d64({ 0x0f, 0x20, 0xd8 }); // mov rax, cr3: reading does not end the block
    EXPECT_EQ(in.op[1].kind, OpKind::Cr);
    EXPECT_EQ(in.op[1].reg, 3);
    EXPECT_FALSE(ends(in));
    in = d64({ 0x0f, 0x23, 0xf8 }); // mov dr7, rax
    EXPECT_EQ(in.op[0].kind, OpKind::Dr);
    EXPECT_EQ(in.op[0].reg, 7);
    EXPECT_TRUE(ends(in));

    in = d64({ 0x8e, 0xd0 }); // mov ss, eax
    EXPECT_EQ(in.op[0].kind, OpKind::Seg);
    EXPECT_EQ(in.op[0].reg, SS);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x8e, 0xd8 }); // mov ds, eax
    EXPECT_EQ(in.op[0].reg, DS);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x8c, 0xd8 }); // mov eax, ds
    EXPECT_EQ(in.op[1].kind, OpKind::Seg);
    EXPECT_EQ(in.op[1].reg, DS);
    EXPECT_FALSE(ends(in));
    in = d64({ 0x8e, 0xe0 }); // mov fs, eax
    EXPECT_EQ(in.op[0].reg, FS);

    in = d32({ 0x17 }); // pop ss
    EXPECT_EQ(in.nops, 1);
    EXPECT_EQ(in.op[0].kind, OpKind::Seg);
    EXPECT_EQ(in.op[0].reg, SS);
    EXPECT_EQ(in.osize, 4);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x0f, 0xa9 }); // pop gs
    EXPECT_EQ(in.op[0].reg, GS);
    EXPECT_TRUE(ends(in));
    in = d64({ 0x0f, 0xa0 }); // push fs
    EXPECT_EQ(in.op[0].kind, OpKind::Seg);
    EXPECT_EQ(in.op[0].reg, FS);
    EXPECT_EQ(in.osize, 8);
    EXPECT_FALSE(ends(in));
    in = d16({ 0x06 }); // push es
    EXPECT_EQ(in.op[0].reg, ES);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0x06 }), Status::Invalid);
}

TEST(SoftDecoder, ConditionCodes)
{
    for (uint8_t cc = 0; cc < 16; ++cc) {
        Insn j = d64({ static_cast<uint8_t>(0x70 + cc), 0x00 });
        EXPECT_EQ(j.cond, cc);
        EXPECT_TRUE(j.flags & kFlagRelBranch);
        Insn jl = d64({ 0x0f, static_cast<uint8_t>(0x80 + cc), 0, 0, 0, 0 });
        EXPECT_EQ(jl.cond, cc);
        EXPECT_EQ(jl.mnemonic, j.mnemonic);
        Insn s = d64({ 0x0f, static_cast<uint8_t>(0x90 + cc), 0xc0 }); // setcc al
        EXPECT_EQ(s.cond, cc);
        EXPECT_EQ(s.nops, 1);
        expect_gpr(s.op[0], RAX, 1);
        EXPECT_FALSE(ends(s));
        Insn m = d64({ 0x0f, static_cast<uint8_t>(0x40 + cc), 0xc1 }); // cmovcc eax, ecx
        EXPECT_EQ(m.cond, cc);
        EXPECT_EQ(m.nops, 2);
        EXPECT_FALSE(ends(m));
    }
    EXPECT_EQ(d64({ 0x0f, 0x94, 0xc0 }).mnemonic, ZYDIS_MNEMONIC_SETZ);
    EXPECT_EQ(d64({ 0x0f, 0x4c, 0xc1 }).mnemonic, ZYDIS_MNEMONIC_CMOVL);
}

TEST(SoftDecoder, X87AndSimdOperands)
{
    Insn in = d64({ 0xd8, 0xc1 }); // fadd st0, st1
    EXPECT_EQ(in.nops, 2);
    EXPECT_EQ(in.op[0].kind, OpKind::St);
    EXPECT_EQ(in.op[0].reg, 0);
    EXPECT_EQ(in.op[1].reg, 1);
    in = d64({ 0xdc, 0xc1 }); // fadd st1, st0
    EXPECT_EQ(in.op[0].reg, 1);
    EXPECT_EQ(in.op[1].reg, 0);
    in = d64({ 0xdd, 0x00 }); // fld qword [rax]
    EXPECT_EQ(in.nops, 1);
    EXPECT_EQ(in.op[0].size, 8);
    in = d64({ 0xdb, 0x28 }); // fld tbyte [rax]
    EXPECT_EQ(in.op[0].size, 10);
    in = d64({ 0xdf, 0xe0 }); // fnstsw ax
    expect_gpr(in.op[0], RAX, 2);
    in = d64({ 0x66, 0xd9, 0x30 }); // fnstenv [rax], 16-bit layout
    EXPECT_EQ(in.osize, 2);
    in = d64({ 0xd9, 0x30 }); // fnstenv [rax], 32-bit layout
    EXPECT_EQ(in.osize, 4);

    in = d64({ 0x0f, 0x6f, 0xc1 }); // movq mm0, mm1
    EXPECT_EQ(in.op[0].kind, OpKind::Mmx);
    EXPECT_EQ(in.op[1].reg, 1);
    in = d64({ 0x66, 0x48, 0x0f, 0x7e, 0xc0 }); // movq rax, xmm0
    expect_gpr(in.op[0], RAX, 8);
    EXPECT_EQ(in.op[1].kind, OpKind::Xmm);
    in = d64({ 0xf2, 0x48, 0x0f, 0x2a, 0xc0 }); // cvtsi2sd xmm0, rax
    EXPECT_EQ(in.op[1].size, 8);
    in = d64({ 0xf3, 0x0f, 0x10, 0x00 }); // movss xmm0, [rax]
    EXPECT_EQ(in.op[1].size, 4);
}

TEST(SoftDecoder, BlockEnds)
{
    // Plain ALU / moves / stack ops do not end a block.
    for (auto in :
        { d64({ 0x01, 0xc8 }), d64({ 0x48, 0x89, 0x07 }), d64({ 0x50 }), d64({ 0x58 }), d64({ 0x9c }), d64({ 0x90 }),
            d64({ 0x0f, 0x31 }), d64({ 0x0f, 0x32 }), d64({ 0x0f, 0x01, 0xf8 }), d64({ 0xfc }), d64({ 0xc9 }),
            d64({ 0x0f, 0x01, 0x00 }), d64({ 0xfb }), // STI: its handler stops the block when it opens a shadow
            d64({ 0xfa }) }) // CLI
        EXPECT_FALSE(ends(in)) << ZydisMnemonicGetString(static_cast<ZydisMnemonic>(in.mnemonic));

    std::vector<Insn> enders = {
        d64({ 0xc3 }), // ret
        d64({ 0xf4 }), // hlt
        d64({ 0x0f, 0x0b }), // ud2
        d64({ 0x0f, 0xb9, 0x00 }), // ud1
        d64({ 0xcc }), // int3
        d64({ 0x0f, 0x05 }), // syscall
        d64({ 0x48, 0x0f, 0x07 }), // sysretq
        d32({ 0x0f, 0x34 }), // sysenter
        d32({ 0x0f, 0x35 }), // sysexit
        d32({ 0xcf }), // iretd
        d64({ 0x9d }), // popfq
        d32({ 0x9d }), // popfd
        d16({ 0x9d }), // popf
        d64({ 0x0f, 0xa2 }), // cpuid
        d64({ 0x0f, 0x30 }), // wrmsr
        d64({ 0x0f, 0x01, 0xd1 }), // xsetbv
        d64({ 0x0f, 0x01, 0x18 }), // lidt
        d64({ 0x0f, 0x00, 0xd0 }), // lldt ax
        d64({ 0x0f, 0x00, 0xd8 }), // ltr ax
        d64({ 0x0f, 0x01, 0xf0 }), // lmsw ax
        d64({ 0x0f, 0x06 }), // clts
        d64({ 0x66, 0x0f, 0x38, 0x82, 0x00 }), // invpcid rax, [rax]
        d64({ 0x0f, 0xaa }), // rsm
        d64({ 0x0f, 0x09 }), // wbinvd
        d64({ 0x0f, 0x08 }), // invd
        d64({ 0x0f, 0x01, 0xc8 }), // monitor
        d64({ 0x0f, 0x01, 0xc9 }), // mwait
        d64({ 0xe4, 0x60 }), // in al, 0x60
        d64({ 0x6d }), // insd
        d64({ 0xf3, 0x6f }), // rep outsd
        d64({ 0xf3, 0xaa }), // rep stosb
        d16({ 0xf3, 0xa5 }), // rep movsw
        d64({ 0xff, 0xe0 }), // jmp rax
        d64({ 0xff, 0x10 }), // call [rax]
        d32({ 0x9a, 0, 0, 0, 0, 0x08, 0 }), // call 8:0
        d32({ 0x0f, 0xa1 }), // pop fs
        d32({ 0x1f }), // pop ds
    };
    for (const Insn& in : enders)
        EXPECT_TRUE(ends(in)) << ZydisMnemonicGetString(static_cast<ZydisMnemonic>(in.mnemonic));
}

TEST(SoftDecoder, InvalidAndTruncated)
{
    Insn in;
    const uint8_t lock_nop[] = { 0xf0, 0x90 }; // LOCK on a non-lockable instruction
    EXPECT_EQ(decoder().decode(CpuMode::Long64, lock_nop, sizeof lock_nop, in), Status::Invalid);
    const uint8_t lock_reg[] = { 0xf0, 0x01, 0xc8 }; // lock add eax, ecx (register destination)
    EXPECT_EQ(decoder().decode(CpuMode::Long64, lock_reg, sizeof lock_reg, in), Status::Invalid);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0xd6 }), Status::Invalid); // SALC, not in 64-bit mode
    EXPECT_EQ(status_of(CpuMode::Long64, { 0x0f, 0x04 }), Status::Invalid);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0x37 }), Status::Invalid); // aaa
    EXPECT_EQ(d32({ 0x37 }).mnemonic, ZYDIS_MNEMONIC_AAA);
    EXPECT_EQ(status_of(CpuMode::Prot32, { 0x8d, 0xc0 }), Status::Invalid); // lea eax, eax
    // Real mode has neither VEX nor the protected-mode-only instructions.
    EXPECT_EQ(status_of(CpuMode::Real, { 0x0f, 0x00, 0xc0 }), Status::Invalid); // sldt ax
    EXPECT_EQ(d16({ 0x0f, 0x00, 0xc0 }).mnemonic, ZYDIS_MNEMONIC_SLDT);
    // EVEX is rejected; a YMM operand is not representable.
    EXPECT_EQ(status_of(CpuMode::Long64, { 0x62, 0xf1, 0x7c, 0x48, 0x28, 0xc1 }), Status::Invalid);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0xc5, 0xfc, 0x28, 0xc1 }), Status::Invalid); // vmovaps ymm0, ymm1
    // 16 bytes: too long.
    EXPECT_EQ(status_of(CpuMode::Long64,
                  { 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x90 }),
        Status::Invalid);

    EXPECT_EQ(status_of(CpuMode::Long64, { 0x0f }), Status::NeedMore);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0x48, 0x8b, 0x05, 0x04, 0x00 }), Status::NeedMore);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0xe8, 0x00, 0x00, 0x00 }), Status::NeedMore);
    EXPECT_EQ(status_of(CpuMode::Long64, { 0xf3 }), Status::NeedMore);
    EXPECT_EQ(status_of(CpuMode::Prot32, { 0xea, 0x78, 0x56, 0x34, 0x12, 0x10 }), Status::NeedMore);
    EXPECT_EQ(decoder().decode(CpuMode::Long64, lock_nop, 0, in), Status::NeedMore);
}

TEST(SoftDecoder, XbyakGenerated)
{
    {
        Xbyak::CodeGenerator g;
        g.lock();
        g.xadd(g.qword[g.r12 + g.r13 * 2 - 0x80], g.r11);
        Insn in = dx(g);
        EXPECT_EQ(in.mnemonic, ZYDIS_MNEMONIC_XADD);
        EXPECT_TRUE(in.flags & kFlagLock);
        EXPECT_EQ(in.base, 12);
        EXPECT_EQ(in.index, 13);
        EXPECT_EQ(in.scale, 2);
        EXPECT_EQ(in.disp, -0x80);
        expect_gpr(in.op[1], 11, 8);
        EXPECT_EQ(in.op[0].size, 8);
    }
    {
        Xbyak::CodeGenerator g;
        g.mov(g.word[g.rbp + 0x12345678], 0x8001);
        Insn in = dx(g);
        EXPECT_EQ(in.seg, SS);
        EXPECT_EQ(in.disp, 0x12345678);
        EXPECT_EQ(in.op[0].size, 2);
        EXPECT_EQ(in.op[1].size, 2);
        EXPECT_EQ(in.imm & 0xffff, 0x8001u);
        EXPECT_TRUE(in.flags & kFlagOpsizePrefix);
    }
    {
        Xbyak::CodeGenerator g;
        g.movzx(g.r10d, g.byte[g.rip + 0x40]);
        Insn in = dx(g);
        EXPECT_EQ(in.base, kRipReg);
        EXPECT_EQ(in.disp, 0x40);
        expect_gpr(in.op[0], 10, 4);
        EXPECT_EQ(in.op[1].size, 1);
    }
    {
        Xbyak::CodeGenerator g;
        g.cmpxchg(g.dword[g.rsp + g.rax * 8], g.esi);
        Insn in = dx(g);
        EXPECT_EQ(in.base, RSP);
        EXPECT_EQ(in.index, RAX);
        EXPECT_EQ(in.seg, SS);
        EXPECT_EQ(in.osize, 4);
    }
}
