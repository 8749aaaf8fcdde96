// Guest bytes → Insn, through Zydis. Zydis decodes ~50–100 MB/s, far too slow to call per
// executed instruction, so it runs once per instruction per block (block_cache.h) and its output
// is reduced to the compact Insn the interpreter executes.
//
// The Insn contract (what handlers may rely on):
// - op[0..nops) are the operands of the instruction's Intel-syntax form, in that order: Zydis'
//   EXPLICIT and IMPLICIT operands, not its HIDDEN ones. So `add eax, 5` (05 id) has op0 = EAX
//   even though EAX is not encoded, `shl eax, cl` has op1 = CL, `shl al, 1` (D0) has op1 = Imm 1,
//   `in al, dx` has op0 = AL, op1 = DX, `out 0x80, al` has op0 = Imm, op1 = AL, `push fs` /
//   `pop ss` have op0 = Seg, `fadd st0, st1` has both St operands, `fnstsw ax` has op0 = AX.
//   Never included: string instructions' memory operands and RSI/RDI/RCX/AL.., MUL/DIV/CDQ's
//   RAX/RDX, the stack of PUSH/POP/CALL/RET, XLAT's [RBX+AL], flags, descriptor-table registers.
// - Register operands: Gpr reg = 0..15 for any width, size = the register's width (1, 2, 4, 8);
//   AH/CH/DH/BH are GprHigh8 0..3. Seg/Cr/Dr: size = the operand width Zydis reports (2 for
//   Seg; 4 or 8 for Cr/Dr). Xmm/Mmx/St: size = the bytes the instruction accesses (e.g. 8 for
//   `movsd xmm0, xmm1`, 16 for `movdqu`, 10 for ST(i)).
// - osize = Zydis' effective operand width (1, 2, 4, 8: e.g. 1 for byte forms and MOVSB, the
//   element size of string instructions, 8 for near branches/PUSH/POP in 64-bit mode, 2 or 4
//   selecting the 16/32-bit FLDENV/FSAVE layouts). When a visible operand is an Xmm, Mmx or St
//   register Zydis' width means nothing, and osize is the size of op[0] instead (may be 10/16).
// - Mem: at most one per instruction (Insn::seg/base/index/scale/disp; kFlagHasMem). op.size =
//   bytes accessed: 4/6/10 for far pointers m16:16/m16:32/m16:64 (also LDS/LSS..), 6/10 for
//   LGDT/SGDT/LIDT/SIDT, 8/16 for CMPXCHG8B/16B. LEA (address generation) gets osize. Sizes
//   above 255 (FXSAVE/FXRSTOR 512, XSAVE*) are given as 0: the handler knows them.
//   seg = Zydis' effective segment: the override prefix, else SS for an RSP/RBP/ESP/EBP/SP/BP
//   base (incl. 16-bit [bp+si]/[bp+di]), else DS. In 64-bit mode Zydis drops ES/CS/SS/DS
//   overrides as the CPU does (their bases are 0 there anyway); FS/GS overrides are kept.
//   16-bit forms are base + index with scale 1 ([bx+si] → base RBX, index RSI). scale is 1 when
//   there is no index. disp is sign-extended. base = kRipReg for RIP-/EIP-relative (disp is
//   relative to the next instruction, which cpu.rip holds while the handler runs).
// - Without a visible Mem operand, seg still names the segment for implicit DS-relative
//   accesses: the override prefix if there is one, else DS (string instructions' source, XLAT);
//   base/index stay kNoReg. String instructions' destination is always ES (no override).
// - Imm: the first immediate is Insn::imm (imm_index 0), the second Insn::imm2 (imm_index 1;
//   only ENTER's nesting level). Where the encoding sign-extends (Zydis is_signed: 83 /x ib,
//   6A, 6B, C7 with REX.W, also plain imm16/imm32 of the operand size) the immediate is
//   sign-extended to 64 bits and op.size = osize, the size it is used at; other immediates are
//   zero-extended and op.size is their own size (1 for INT n, IN/OUT port, shift/rotate counts,
//   BT offsets, ENTER level, SSE imm8; 2 for RET/RETF imm16 and ENTER's frame size). Bits above
//   op.size are not meaningful for sign-extended ones: read through read_op or mask.
// - Relative branches (Jcc, JMP/CALL rel, LOOP*, JCXZ/JECXZ/JRCXZ, XBEGIN): kFlagRelBranch,
//   imm = the signed displacement (target = next RIP + imm), no operand for it (nops = 0).
// - Direct far pointers (JMP/CALL ptr16:16/ptr16:32): one Ptr operand, imm = offset, imm2 =
//   selector, op.size = 4 or 6.
// - cond = the condition code (low opcode nibble) for Jcc, SETcc and CMOVcc; 0 otherwise.
// - modrm_reg = raw ModRM.reg (0..7, without REX.R); 0 when there is no ModRM byte.
// - Flags: kFlagRep = F3 acting as REP/REPE on an instruction that accepts it (string and
//   INS/OUTS instructions); kFlagRepne = F2 acting as REPNE. F2/F3 consumed as mandatory SSE
//   prefixes (F3 0F 6F movdqu, F2 0F 10 movsd, F3 90 pause) or ignored (F3 C3) set neither.
//   kFlagOpsizePrefix = a 66 prefix that is not an SSE mandatory prefix. kFlagLock = an
//   effective LOCK. kFlagSegOverride = an effective segment prefix. kFlagRex/kFlagRexW from the
//   REX prefix (not VEX.W).
// - Encodings: legacy and VEX (operands must map onto Gpr/Xmm/Mem/Imm; YMM → Invalid) decode;
//   EVEX, MVEX, XOP and 3DNow! return Invalid (the engine offers none of them). Real mode uses
//   Zydis' real-mode decoder, so VEX and the protected-mode-only instructions (ARPL, SLDT, LAR,
//   ...) are #UD there.
// - The decoder behaves like a CPU without MPX, CET and BMI1, with LZCNT (CPUID advertises it):
//   F3 0F BC is BSF (the TZCNT encoding with an ignored F3), F3 0F BD is LZCNT, ENDBR64/ENDBR32
//   and the other CET and MPX encodings in 0F 1A/1B/1E are hint NOPs (mnemonic NOP, possibly
//   with operands, which NOP must not access), F2 on branches (BND) and 3E on indirect branches
//   (NOTRACK) are ignored. CPUID must not advertise MPX, CET or BMI1 unless this changes.
// - An instruction longer than 15 bytes returns Invalid (the CPU would raise #GP(0)).
#pragma once

#include <cstddef>
#include <cstdint>

#include <Zydis/Zydis.h>

#include "engine/soft/cpu.h"
#include "engine/soft/insn.h"

namespace vessel::soft {

class Decoder {
public:
    Decoder();

    enum class Status {
        Ok,       // `out` holds the instruction, `out.exec` its handler
        Invalid,  // not a valid instruction in this mode (#UD)
        NeedMore, // `len` bytes are not enough (the instruction continues on the next page)
    };

    // Decodes the instruction at bytes[0, len) in `mode`. Sets InsnFlag bits, operands, sizes,
    // the effective segment (SS for RSP/RBP bases), the handler from handler_table(), and
    // kFlagEndsBlock for every instruction after which the block loop must re-dispatch (control
    // transfers, mode/CR/MSR/segment/descriptor-table changes, HLT, POPF/STI/CLI/MOV SS, I/O,
    // INVLPG, serializing instructions, PAUSE, REP string instructions).
    Status decode(CpuMode mode, const uint8_t* bytes, size_t len, Insn& out) const;

private:
    ZydisDecoder m_decoder_real;
    ZydisDecoder m_decoder16;
    ZydisDecoder m_decoder32;
    ZydisDecoder m_decoder64;
};

} // namespace vessel::soft
