// Guest bytes → Insn, through Zydis. Zydis decodes ~50–100 MB/s, far too slow to call per
// executed instruction, so it runs once per instruction per block (block_cache.h) and its output
// is reduced to the compact Insn the interpreter executes.
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
    // INVLPG, serializing instructions).
    Status decode(CpuMode mode, const uint8_t* bytes, size_t len, Insn& out) const;

private:
    ZydisDecoder m_decoder16;
    ZydisDecoder m_decoder32;
    ZydisDecoder m_decoder64;
};

} // namespace vessel::soft
