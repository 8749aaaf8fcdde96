#include "engine/soft/decoder.h"
#include "engine/soft/exec_fast.h"

#include <initializer_list>

#include "engine/soft/handlers.h"

namespace vessel::soft {

namespace {

// GPR number 0..15 of any-width general-purpose register (not AH..BH), or -1.
int gpr_index(ZydisRegister r)
{
    if (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_BL)
        return r - ZYDIS_REGISTER_AL;
    if (r >= ZYDIS_REGISTER_SPL && r <= ZYDIS_REGISTER_R15B)
        return 4 + (r - ZYDIS_REGISTER_SPL);
    if (r >= ZYDIS_REGISTER_AX && r <= ZYDIS_REGISTER_R15W)
        return r - ZYDIS_REGISTER_AX;
    if (r >= ZYDIS_REGISTER_EAX && r <= ZYDIS_REGISTER_R15D)
        return r - ZYDIS_REGISTER_EAX;
    if (r >= ZYDIS_REGISTER_RAX && r <= ZYDIS_REGISTER_R15)
        return r - ZYDIS_REGISTER_RAX;
    return -1;
}

uint8_t gpr_width(ZydisRegister r)
{
    if (r <= ZYDIS_REGISTER_R15B)
        return 1;
    if (r <= ZYDIS_REGISTER_R15W)
        return 2;
    if (r <= ZYDIS_REGISTER_R15D)
        return 4;
    return 8;
}

// Base/index register of a memory operand: GPR index, kRipReg, kNoReg; false if unrepresentable.
bool address_reg(ZydisRegister r, uint8_t& out)
{
    if (r == ZYDIS_REGISTER_NONE) {
        out = kNoReg;
        return true;
    }
    if (r == ZYDIS_REGISTER_RIP || r == ZYDIS_REGISTER_EIP || r == ZYDIS_REGISTER_IP) {
        out = kRipReg;
        return true;
    }
    int i = gpr_index(r);
    if (i < 0 || (r >= ZYDIS_REGISTER_AL && r <= ZYDIS_REGISTER_R15B))
        return false;
    out = static_cast<uint8_t>(i);
    return true;
}

uint8_t bytes_of(uint16_t bits)
{
    unsigned b = bits / 8u;
    return b > 255 ? 0 : static_cast<uint8_t>(b);
}

// Register operand → Operand; false if the engine has no operand kind for it.
bool map_register(const ZydisDecodedOperand& zo, Operand& o)
{
    ZydisRegister r = zo.reg.value;
    if (r >= ZYDIS_REGISTER_AH && r <= ZYDIS_REGISTER_BH) {
        o.kind = OpKind::GprHigh8;
        o.reg = static_cast<uint8_t>(r - ZYDIS_REGISTER_AH);
        o.size = 1;
        return true;
    }
    if (int i = gpr_index(r); i >= 0) {
        o.kind = OpKind::Gpr;
        o.reg = static_cast<uint8_t>(i);
        o.size = gpr_width(r);
        return true;
    }
    auto in_range = [&](ZydisRegister first, ZydisRegister last, OpKind kind, uint8_t default_size) {
        if (r < first || r > last)
            return false;
        o.kind = kind;
        o.reg = static_cast<uint8_t>(r - first);
        o.size = zo.size ? bytes_of(zo.size) : default_size;
        return true;
    };
    return in_range(ZYDIS_REGISTER_ES, ZYDIS_REGISTER_GS, OpKind::Seg, 2)
        || in_range(ZYDIS_REGISTER_CR0, ZYDIS_REGISTER_CR15, OpKind::Cr, 8)
        || in_range(ZYDIS_REGISTER_DR0, ZYDIS_REGISTER_DR15, OpKind::Dr, 8)
        || in_range(ZYDIS_REGISTER_XMM0, ZYDIS_REGISTER_XMM15, OpKind::Xmm, 16)
        || in_range(ZYDIS_REGISTER_MM0, ZYDIS_REGISTER_MM7, OpKind::Mmx, 8)
        || in_range(ZYDIS_REGISTER_ST0, ZYDIS_REGISTER_ST7, OpKind::St, 10);
}

uint8_t segment_of(ZydisRegister r)
{
    if (r >= ZYDIS_REGISTER_ES && r <= ZYDIS_REGISTER_GS)
        return static_cast<uint8_t>(r - ZYDIS_REGISTER_ES);
    return DS;
}

// Segment named by an effective override prefix (attribute bits), or DS.
uint8_t override_segment(ZydisInstructionAttributes a)
{
    if (a & ZYDIS_ATTRIB_HAS_SEGMENT_ES)
        return ES;
    if (a & ZYDIS_ATTRIB_HAS_SEGMENT_CS)
        return CS;
    if (a & ZYDIS_ATTRIB_HAS_SEGMENT_SS)
        return SS;
    if (a & ZYDIS_ATTRIB_HAS_SEGMENT_FS)
        return FS;
    if (a & ZYDIS_ATTRIB_HAS_SEGMENT_GS)
        return GS;
    return DS;
}

bool ends_block_by_mnemonic(ZydisMnemonic m)
{
    switch (m) {
    case ZYDIS_MNEMONIC_HLT:
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
    case ZYDIS_MNEMONIC_SYSCALL:
    case ZYDIS_MNEMONIC_SYSRET:
    case ZYDIS_MNEMONIC_SYSENTER:
    case ZYDIS_MNEMONIC_SYSEXIT:
    case ZYDIS_MNEMONIC_IRET:
    case ZYDIS_MNEMONIC_IRETD:
    case ZYDIS_MNEMONIC_IRETQ:
    case ZYDIS_MNEMONIC_INT:
    case ZYDIS_MNEMONIC_INT1:
    case ZYDIS_MNEMONIC_INT3:
    case ZYDIS_MNEMONIC_INTO:
    case ZYDIS_MNEMONIC_LDS:
    case ZYDIS_MNEMONIC_LES:
    case ZYDIS_MNEMONIC_LFS:
    case ZYDIS_MNEMONIC_LGS:
    case ZYDIS_MNEMONIC_LSS:
    case ZYDIS_MNEMONIC_LGDT:
    case ZYDIS_MNEMONIC_LIDT:
    case ZYDIS_MNEMONIC_LLDT:
    case ZYDIS_MNEMONIC_LTR:
    case ZYDIS_MNEMONIC_LMSW:
    case ZYDIS_MNEMONIC_CLTS:
    case ZYDIS_MNEMONIC_INVLPG:
    case ZYDIS_MNEMONIC_INVLPGA:
    case ZYDIS_MNEMONIC_INVPCID:
    case ZYDIS_MNEMONIC_WRMSR:
    case ZYDIS_MNEMONIC_XSETBV:
    case ZYDIS_MNEMONIC_POPF:
    case ZYDIS_MNEMONIC_POPFD:
    case ZYDIS_MNEMONIC_POPFQ:
    // Not STI (its handler stops the block when it opens an interrupt shadow; translated code ends
    // the translation after the next instruction) nor CLI (masking needs nothing from the loop).
    case ZYDIS_MNEMONIC_IN:
    case ZYDIS_MNEMONIC_OUT:
    case ZYDIS_MNEMONIC_INSB:
    case ZYDIS_MNEMONIC_INSW:
    case ZYDIS_MNEMONIC_INSD:
    case ZYDIS_MNEMONIC_OUTSB:
    case ZYDIS_MNEMONIC_OUTSW:
    case ZYDIS_MNEMONIC_OUTSD:
    case ZYDIS_MNEMONIC_CPUID:
    case ZYDIS_MNEMONIC_RSM:
    case ZYDIS_MNEMONIC_WBINVD:
    case ZYDIS_MNEMONIC_INVD:
    case ZYDIS_MNEMONIC_MWAIT:
    case ZYDIS_MNEMONIC_MONITOR:
    case ZYDIS_MNEMONIC_MWAITX:
    case ZYDIS_MNEMONIC_MONITORX:
    case ZYDIS_MNEMONIC_PAUSE:
    case ZYDIS_MNEMONIC_SERIALIZE: return true;
    default: return false;
    }
}

bool ends_block_by_category(ZydisInstructionCategory c)
{
    switch (c) {
    case ZYDIS_CATEGORY_COND_BR:
    case ZYDIS_CATEGORY_UNCOND_BR:
    case ZYDIS_CATEGORY_CALL:
    case ZYDIS_CATEGORY_RET:
    case ZYDIS_CATEGORY_INTERRUPT:
    case ZYDIS_CATEGORY_SYSCALL:
    case ZYDIS_CATEGORY_SYSRET:
    case ZYDIS_CATEGORY_IO:
    case ZYDIS_CATEGORY_IOSTRINGOP: return true;
    default: return false;
    }
}

// Jcc (70-7F, 0F 80-8F), SETcc (0F 90-9F), CMOVcc (0F 40-4F) carry the condition in the low
// opcode nibble.
bool has_condition(const ZydisDecodedInstruction& z)
{
    if (z.encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY)
        return false;
    if (z.opcode_map == ZYDIS_OPCODE_MAP_DEFAULT)
        return (z.opcode & 0xf0) == 0x70;
    if (z.opcode_map == ZYDIS_OPCODE_MAP_0F) {
        unsigned hi = z.opcode & 0xf0;
        return hi == 0x40 || hi == 0x80 || hi == 0x90;
    }
    return false;
}

} // namespace

Decoder::Decoder()
{
    // Only invalid arguments make these fail; the arguments are constants.
    ZydisDecoderInit(&m_decoder_real, ZYDIS_MACHINE_MODE_REAL_16, ZYDIS_STACK_WIDTH_16);
    ZydisDecoderInit(&m_decoder16, ZYDIS_MACHINE_MODE_LEGACY_16, ZYDIS_STACK_WIDTH_16);
    ZydisDecoderInit(&m_decoder32, ZYDIS_MACHINE_MODE_LEGACY_32, ZYDIS_STACK_WIDTH_32);
    ZydisDecoderInit(&m_decoder64, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64);
    // Decode like a CPU without MPX, CET and BMI1 (TZCNT), whose encodings are NOPs or BSF with an
    // ignored F3 there (decoder.h). LZCNT is decoded: CPUID advertises it (cpuid.h).
    for (ZydisDecoder* d : { &m_decoder_real, &m_decoder16, &m_decoder32, &m_decoder64 }) {
        for (ZydisDecoderMode m : { ZYDIS_DECODER_MODE_MPX, ZYDIS_DECODER_MODE_CET, ZYDIS_DECODER_MODE_TZCNT })
            ZydisDecoderEnableMode(d, m, ZYAN_FALSE);
    }
}

Decoder::Status Decoder::decode(CpuMode mode, const uint8_t* bytes, size_t len, Insn& out) const
{
    const ZydisDecoder* dec = &m_decoder64;
    switch (mode) {
    case CpuMode::Real: dec = &m_decoder_real; break;
    case CpuMode::Prot16: dec = &m_decoder16; break;
    case CpuMode::Prot32: dec = &m_decoder32; break;
    case CpuMode::Long64: dec = &m_decoder64; break;
    }

    ZydisDecodedInstruction z;
    ZydisDecodedOperand zops[ZYDIS_MAX_OPERAND_COUNT];
    ZyanStatus status = ZydisDecoderDecodeFull(dec, bytes, len, &z, zops);
    if (status == ZYDIS_STATUS_NO_MORE_DATA)
        return Status::NeedMore;
    if (!ZYAN_SUCCESS(status))
        return Status::Invalid;
    if (z.encoding != ZYDIS_INSTRUCTION_ENCODING_LEGACY && z.encoding != ZYDIS_INSTRUCTION_ENCODING_VEX)
        return Status::Invalid;

    out = Insn {};
    out.mnemonic = static_cast<uint16_t>(z.mnemonic);
    out.length = z.length;
    out.asize = static_cast<uint8_t>(z.address_width / 8);
    out.opcode = z.opcode;
    out.opmap = static_cast<uint8_t>(z.opcode_map);
    out.modrm_reg = (z.attributes & ZYDIS_ATTRIB_HAS_MODRM) ? z.raw.modrm.reg : 0;
    if (has_condition(z))
        out.cond = z.opcode & 0x0f;

    const ZydisInstructionAttributes a = z.attributes;
    uint16_t flags = 0;
    if (a & ZYDIS_ATTRIB_HAS_LOCK)
        flags |= kFlagLock;
    if (a & (ZYDIS_ATTRIB_HAS_REP | ZYDIS_ATTRIB_HAS_REPE))
        flags |= kFlagRep;
    if (a & ZYDIS_ATTRIB_HAS_REPNE)
        flags |= kFlagRepne;
    if (a & ZYDIS_ATTRIB_HAS_SEGMENT)
        flags |= kFlagSegOverride;
    if (a & ZYDIS_ATTRIB_HAS_REX) {
        flags |= kFlagRex;
        if (z.raw.rex.W)
            flags |= kFlagRexW;
    }
    for (unsigned i = 0; i < z.raw.prefix_count; ++i) {
        if (z.raw.prefixes[i].value == 0x66 && z.raw.prefixes[i].type != ZYDIS_PREFIX_TYPE_MANDATORY)
            flags |= kFlagOpsizePrefix;
    }

    // Operand width, for the operands that take it (sign-extended immediates, LEA).
    const uint8_t width = static_cast<uint8_t>(z.operand_width / 8);
    out.osize = width;
    out.seg = override_segment(a);
    bool simd_operand = false;
    bool have_imm = false;
    bool ends_block = false;

    for (unsigned i = 0; i < z.operand_count; ++i) {
        const ZydisDecodedOperand& zo = zops[i];
        if (zo.visibility != ZYDIS_OPERAND_VISIBILITY_EXPLICIT && zo.visibility != ZYDIS_OPERAND_VISIBILITY_IMPLICIT)
            continue;
        if (zo.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && zo.imm.is_relative) {
            flags |= kFlagRelBranch;
            out.imm = static_cast<uint64_t>(zo.imm.value.s);
            continue;
        }
        if (out.nops == 4)
            return Status::Invalid; // no legacy/VEX instruction we accept has more
        Operand& o = out.op[out.nops];
        switch (zo.type) {
        case ZYDIS_OPERAND_TYPE_REGISTER:
            if (!map_register(zo, o))
                return Status::Invalid; // YMM, mask, bound, test registers...
            if (o.kind == OpKind::Xmm || o.kind == OpKind::Mmx || o.kind == OpKind::St)
                simd_operand = true;
            break;
        case ZYDIS_OPERAND_TYPE_MEMORY: {
            if ((flags & kFlagHasMem) || zo.mem.type == ZYDIS_MEMOP_TYPE_VSIB || zo.mem.type == ZYDIS_MEMOP_TYPE_MIB)
                return Status::Invalid;
            flags |= kFlagHasMem;
            o.kind = OpKind::Mem;
            if (zo.mem.type == ZYDIS_MEMOP_TYPE_AGEN)
                o.size = width; // LEA: the destination's size
            else
                o.size = bytes_of(zo.size);
            if (!address_reg(zo.mem.base, out.base) || !address_reg(zo.mem.index, out.index))
                return Status::Invalid;
            out.scale = out.index == kNoReg || zo.mem.scale == 0 ? 1 : zo.mem.scale;
            out.disp = zo.mem.disp.has_displacement ? zo.mem.disp.value : 0;
            out.seg = segment_of(zo.mem.segment);
            break;
        }
        case ZYDIS_OPERAND_TYPE_POINTER:
            o.kind = OpKind::Ptr;
            o.size = bytes_of(zo.size);
            out.imm = zo.ptr.offset;
            out.imm2 = zo.ptr.segment;
            break;
        case ZYDIS_OPERAND_TYPE_IMMEDIATE: {
            o.kind = OpKind::Imm;
            uint8_t own = bytes_of(zo.size);
            uint64_t v;
            if (zo.imm.is_signed) {
                v = static_cast<uint64_t>(zo.imm.value.s);
                o.size = width > own ? width : own;
            } else {
                v = zo.imm.value.u;
                o.size = own;
            }
            if (!have_imm) {
                out.imm = v;
                have_imm = true;
            } else {
                out.imm2 = v;
                o.imm_index = 1;
            }
            break;
        }
        default: return Status::Invalid;
        }
        // Writes to segment, control and debug registers change what later instructions mean.
        if (out.nops == 0 && (o.kind == OpKind::Seg || o.kind == OpKind::Cr || o.kind == OpKind::Dr)
            && (z.mnemonic == ZYDIS_MNEMONIC_MOV || z.mnemonic == ZYDIS_MNEMONIC_POP))
            ends_block = true;
        ++out.nops;
    }

    if (simd_operand && out.nops > 0)
        out.osize = out.op[0].size;

    if (ends_block || (flags & kFlagRelBranch) || ends_block_by_category(z.meta.category)
        || ends_block_by_mnemonic(z.mnemonic) || (flags & (kFlagRep | kFlagRepne)))
        flags |= kFlagEndsBlock;
    out.flags = flags;
    out.exec = handler_table()[z.mnemonic];
    if (ExecFn fast = specialize(out))
        out.exec = fast;
    return Status::Ok;
}

} // namespace vessel::soft
