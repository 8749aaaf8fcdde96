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
#include "engine/soft/jit.h"
#include "engine/soft/mmu.h"

namespace vessel::soft {

constexpr unsigned kMaxBlockInsns = 64;
constexpr uint64_t kNoPage = ~0ULL;

struct Block {
    uint64_t gpa { 0 }; // guest-physical address of the first byte
    uint64_t gpa2 { kNoPage }; // second page, when the last instruction crosses into it
    uint32_t gen { 0 }; // code-page generations the block was decoded at
    uint32_t gen2 { 0 };
    CpuMode mode { CpuMode::Real };
    uint32_t count { 0 };
    std::vector<Insn> insns;
    // Translated code (jit.h) for supervisor and user privilege, and runs so far.
    mutable const void* jit[2] { nullptr, nullptr };
    mutable uint32_t runs { 0 };
};

// The jump cache: the block last run at a linear RIP, under the TLB generation, mode and
// privilege it was found with (standard layout: translated code reads it).
struct JumpEntry {
    uint64_t linear { ~0ULL };
    uint64_t tlb_gen { 0 };
    uint64_t epoch { ~0ULL }; // code-write epoch at which the block was last found valid
    const Block* block { nullptr };
    const void* code { nullptr }; // its translation for `user`, once there is one
    uint8_t mode { 0 }; // CpuMode
    bool user { false };
    bool global { false }; // tlb_gen is Tlb::gen_global (a global page) rather than Tlb::gen
    uint32_t page_gen { 0 }; // Tlb::page_gen_of(linear) when it was found
};
constexpr size_t kJumpIndexBits = 15;
constexpr size_t kJumpEntries = size_t { 1 } << kJumpIndexBits; // 2-way: pairs of entries
constexpr uint64_t kJumpHash = 0x9e3779b97f4a7c15ULL;

class BlockCache {
public:
    explicit BlockCache(SoftMachine& machine, JitMode jit = jit_mode_from_env())
        : m_machine(machine)
        , m_jit_mode(jit)
    {
    }
    ~BlockCache();

    // The block for the instruction at c.rip (linear `linear`, physical `gpa`), decoding it on a
    // miss or when its page was written since. Throws GuestFault (#PF on the fetch of a second
    // page, #UD when the first instruction does not decode).
    const Block& get(Cpu& c, uint64_t linear, uint64_t gpa);

    // The block last executed at this linear RIP, if the TLB and the block are still what they
    // were (no translation or page walk needed), else nullptr.
    // The block's pages are checked only when some code page was written since the entry was
    // last checked (the machine's code-write epoch moved).
    const Block* find_linear(const Cpu& c, uint64_t linear)
    {
        JumpEntry* e = jump_entry(linear);
        if (!e)
            return nullptr;
        JumpEntry& j = *e;
        if (j.tlb_gen == (j.global ? c.tlb.gen_global : c.tlb.gen) && j.page_gen == c.tlb.page_gen_of(linear)
            && j.mode == static_cast<uint8_t>(c.mode) && j.user == (c.cpl == 3)) [[likely]] {
            uint64_t epoch = m_machine.code_write_epoch();
            if (j.epoch == epoch) [[likely]]
                return j.block;
            if (valid(*j.block)) {
                j.epoch = epoch;
                return j.block;
            }
        }
        return nullptr;
    }
    void remember_linear(const Cpu& c, uint64_t linear, const Block& b)
    {
        // The epoch before the check: a write racing with it leaves the entry to be re-checked.
        uint64_t epoch = m_machine.code_write_epoch();
        // Code in a global page (and only there: a block that spills into a second page is keyed
        // as non-global) stays found across CR3 writes, as its TLB entry does.
        const TlbEntry& te = c.tlb.e[c.cpl == 3][(linear >> 12) & (kTlbEntries - 1)];
        bool global = b.gpa2 == kNoPage && te.tag_exec == (linear & ~0xfffULL) && te.global;
        // A block spilling into a second page is keyed as non-global, and INVLPG of that page
        // bumps the first page's generation as well (Tlb::flush_page).
        uint64_t tlb_gen = global ? c.tlb.gen_global : c.tlb.gen;
        // Two ways: the newest entry first, the one it displaces second (unless that was an
        // older entry for the same RIP).
        size_t i = jump_index(linear);
        if (m_jump[i].linear != linear)
            m_jump[i + 1] = m_jump[i];
        m_jump[i] = JumpEntry { linear, tlb_gen, valid(b) ? epoch : ~0ULL, &b, nullptr, static_cast<uint8_t>(c.mode),
            c.cpl == 3, global, c.tlb.page_gen_of(linear) };
    }
    // The translation of the block find_linear() just returned for `linear` (translated code
    // looks the jump cache up itself and goes straight there).
    void remember_code(uint64_t linear, const void* code)
    {
        if (JumpEntry* j = jump_entry(linear))
            j->code = code;
    }
    // The first of the two entries a linear RIP may be in (a multiplicative hash: Linux's hot
    // kernel and user code collided in pairs under the former XOR of RIP >> 12).
    static size_t jump_index(uint64_t linear) { return (linear * kJumpHash) >> (64 - kJumpIndexBits) & ~size_t { 1 }; }
    const JumpEntry* jump_table() const { return m_jump.data(); }
    // The entry of the pair that holds `linear`, if either does.
    JumpEntry* jump_entry(uint64_t linear)
    {
        size_t i = jump_index(linear);
        if (m_jump[i].linear == linear)
            return &m_jump[i];
        return m_jump[i + 1].linear == linear ? &m_jump[i + 1] : nullptr;
    }

    void flush();
    size_t size() const { return m_blocks.size(); }

    // Host code for the block at the current privilege, translating it once it is hot; nullptr:
    // interpret it. When the code buffer is full, every block is dropped at the next
    // flush_if_full() (the caller's reference to `b` stays valid until then).
    const void* translated(Cpu& c, const Block& b)
    {
        if (m_jit_mode == JitMode::Off || b.mode != CpuMode::Long64)
            return nullptr;
        const void* code = b.jit[c.cpl == 3];
        if (code) [[likely]]
            return code == jit_untranslatable() ? nullptr : code;
        if (m_jit_mode != JitMode::Eager && ++b.runs < kJitThreshold)
            return nullptr;
        return translate(c, b);
    }
    uint64_t run_translated(Cpu& c, const void* code, uint64_t budget) { return m_jit->run(c, code, budget, *this); }
    void patch(const void** slot, const void* code) { m_jit->patch(slot, code); }
    void flush_if_full()
    {
        if (m_jit_full) [[unlikely]]
            flush();
    }
    const Jit* jit() const { return m_jit.get(); }

private:
    static uint64_t key(uint64_t gpa, CpuMode mode) { return gpa | (static_cast<uint64_t>(mode) << 56); }
    bool valid(const Block& b) const
    {
        if (m_machine.page_generation(b.gpa) != b.gen) [[unlikely]]
            return false;
        return b.gpa2 == kNoPage || m_machine.page_generation(b.gpa2) == b.gen2;
    }
    std::unique_ptr<Block> decode(Cpu& c, uint64_t linear, uint64_t gpa);
    const void* translate(Cpu& c, const Block& b);

    static constexpr size_t kFastEntries = 32768;
    static constexpr size_t kMaxBlocks = 1 << 16;

    SoftMachine& m_machine;
    Decoder m_decoder;
    std::unordered_map<uint64_t, std::unique_ptr<Block>> m_blocks;
    struct Fast {
        uint64_t key { ~0ULL };
        Block* block { nullptr };
    };
    std::vector<Fast> m_fast { kFastEntries };
    std::vector<JumpEntry> m_jump { kJumpEntries };
    // Blocks replaced after their page was written: the fast and jump tables may still point at
    // them (they fail valid()), so they live until the next flush().
    std::vector<std::unique_ptr<Block>> m_stale;
    JitMode m_jit_mode;
    std::unique_ptr<Jit> m_jit; // created with the first translation
    bool m_jit_full { false };
};

} // namespace vessel::soft
