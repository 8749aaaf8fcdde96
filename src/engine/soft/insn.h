// The software engine's decoded instruction: Zydis decodes guest bytes once into this compact
// form, kept in cached blocks (block_cache.h); the interpreter only ever sees `Insn`. The later
// binary translator reads the same records, so decoding, semantics and dispatch stay separate.
#pragma once

#include <cstdint>

namespace vessel::soft {

struct Cpu;
struct Insn;

// Executes one instruction. On entry cpu.rip already points at the next instruction
// (cpu.insn_start at this one). Architectural exceptions are thrown as GuestFault (cpu.h);
// a handler must not change architectural state before its last access that can fault.
using ExecFn = void (*)(Cpu&, const Insn&);

enum class OpKind : uint8_t {
    None,
    Gpr,      // reg = 0..15 (size 1 means the low byte: AL, CL, ..., SPL, ..., R15B)
    GprHigh8, // reg = 0..3 for AH, CH, DH, BH
    Mem,      // the instruction's one memory operand (Insn::seg/base/index/scale/disp)
    Imm,      // Insn::imm (op 0 or 1 of the immediates; the second one is Insn::imm2)
    Seg,      // reg = SegIdx
    Cr,       // reg = control register number
    Dr,       // reg = debug register number
    Xmm,      // reg = 0..15
    Mmx,      // reg = 0..7
    St,       // reg = x87 stack index ST(i)
    Ptr,      // far pointer: imm = offset, imm2 = selector
};

struct Operand {
    OpKind kind { OpKind::None };
    uint8_t reg { 0 };
    uint8_t size { 0 }; // bytes accessed (1, 2, 4, 8, 10, 16; for Mem of LEA: operand size)
    uint8_t imm_index { 0 }; // for Imm: 0 = Insn::imm, 1 = Insn::imm2
};

constexpr uint8_t kNoReg = 0xff;
constexpr uint8_t kRipReg = 0xfe; // base register of a RIP-relative memory operand

enum InsnFlag : uint16_t {
    kFlagLock = 1 << 0,
    kFlagRep = 1 << 1,          // F3 (REP / REPE)
    kFlagRepne = 1 << 2,        // F2 (REPNE)
    kFlagHasMem = 1 << 3,       // one operand is memory
    kFlagEndsBlock = 1 << 4,    // control flow or state change the block loop must see
    kFlagRelBranch = 1 << 5,    // imm holds the branch target's offset from the next RIP
    kFlagSegOverride = 1 << 6,  // an explicit segment prefix was given
    kFlagRexW = 1 << 7,
    kFlagRex = 1 << 8,          // any REX prefix (SPL/BPL/SIL/DIL instead of AH..BH)
    kFlagOpsizePrefix = 1 << 9, // 66
};

struct Insn {
    ExecFn exec { nullptr };
    uint64_t imm { 0 };  // first immediate, sign-extended to 64 bits where the encoding does
    uint64_t imm2 { 0 }; // second immediate (ENTER nesting level, far pointer selector)
    int64_t disp { 0 };  // displacement of the memory operand
    uint16_t mnemonic { 0 }; // ZydisMnemonic (handlers shared by several mnemonics look at it)
    uint16_t flags { 0 };    // InsnFlag
    uint8_t length { 0 };
    uint8_t osize { 0 };     // effective operand size in bytes (1, 2, 4, 8)
    uint8_t asize { 0 };     // effective address size in bytes (2, 4, 8)
    uint8_t seg { 0 };       // SegIdx of the memory operand (after overrides and SS defaults)
    uint8_t base { kNoReg }; // GPR index, kRipReg or kNoReg
    uint8_t index { kNoReg };
    uint8_t scale { 1 };     // 1, 2, 4, 8
    uint8_t nops { 0 };      // explicit operands in op[]
    uint8_t opcode { 0 };    // last opcode byte (for handlers that share a mnemonic family)
    uint8_t opmap { 0 };     // 0 = one-byte map, 1 = 0F, 2 = 0F38, 3 = 0F3A
    uint8_t modrm_reg { 0 }; // ModRM.reg (group opcodes)
    uint8_t cond { 0 };      // condition code 0..15 for Jcc/SETcc/CMOVcc
    Operand op[4] {};
};

} // namespace vessel::soft
