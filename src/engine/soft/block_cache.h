// Decoded basic blocks, keyed by guest-physical address and decode mode. A block is a run of
// straight-line instructions inside one guest page (its last instruction may spill into the
// next page), ending at the first instruction the decoder marks kFlagEndsBlock, at the page end,
// or at kMaxBlockInsns. Blocks are position-independent: handlers compute everything from
// cpu.rip, so the same physical code mapped at several linear addresses shares one block.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/soft/cpu.h"
#include "engine/soft/decoder.h"
#include "engine/soft/insn.h"

namespace vessel::soft {

constexpr unsigned kMaxBlockInsns = 64;
constexpr uint64_t kNoPage = ~0ULL;

struct Block {
    uint64_t gpa { 0 };       // guest-physical address of the first byte
    uint64_t gpa2 { kNoPage }; // second page, when the last instruction crosses into it
    uint32_t gen { 0 };       // code-page generations the block was decoded at
    uint32_t gen2 { 0 };
    CpuMode mode { CpuMode::Real };
    uint32_t count { 0 };
    std::vector<Insn> insns;
};

class BlockCache {
public:
    explicit BlockCache(SoftMachine& machine) : m_machine(machine) { }

    // The block for the instruction at c.rip (linear `linear`, physical `gpa`), decoding it on a
    // miss or when its page was written since. Throws GuestFault (#PF on the fetch of a second
    // page, #UD when the first instruction does not decode).
    const Block& get(Cpu& c, uint64_t linear, uint64_t gpa);

    void flush();
    size_t size() const { return m_blocks.size(); }

private:
    static uint64_t key(uint64_t gpa, CpuMode mode) { return gpa | (static_cast<uint64_t>(mode) << 56); }
    bool valid(const Block& b) const;
    std::unique_ptr<Block> decode(Cpu& c, uint64_t linear, uint64_t gpa);

    static constexpr size_t kFastEntries = 4096;
    static constexpr size_t kMaxBlocks = 1 << 16;

    SoftMachine& m_machine;
    Decoder m_decoder;
    std::unordered_map<uint64_t, std::unique_ptr<Block>> m_blocks;
    struct Fast {
        uint64_t key { ~0ULL };
        Block* block { nullptr };
    };
    std::vector<Fast> m_fast { kFastEntries };
};

} // namespace vessel::soft
