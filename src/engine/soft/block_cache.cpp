#include "engine/soft/block_cache.h"

#include <cstring>

#include "engine/soft/mmu.h"

namespace vessel::soft {

namespace {

// The linear address of the page after the one `linear` is in (wrapping at 4 GiB outside
// 64-bit mode).
uint64_t next_page_linear(const Cpu& c, uint64_t linear)
{
    uint64_t next = (linear & ~0xfffULL) + 0x1000;
    return c.mode == CpuMode::Long64 ? next : next & 0xffffffffULL;
}

} // namespace

BlockCache::~BlockCache() = default;

const void* BlockCache::translate(Cpu& c, const Block& b)
{
    if (!m_jit) {
        m_jit = Jit::create();
        if (!m_jit) {
            m_jit_mode = JitMode::Off;
            return nullptr;
        }
    }
    bool user = c.cpl == 3;
    const void* code = m_jit->translate(c, *this, b, user);
    if (!code) {
        m_jit_full = true;
        return nullptr;
    }
    b.jit[user] = code;
    return code == jit_untranslatable() ? nullptr : code;
}

void BlockCache::flush()
{
    if (m_jit)
        m_jit->reset();
    m_jit_full = false;
    m_blocks.clear();
    m_stale.clear();
    for (auto& f : m_fast)
        f = Fast {};
    for (auto& j : m_jump)
        j = JumpEntry {};
}

const Block& BlockCache::get(Cpu& c, uint64_t linear, uint64_t gpa)
{
    uint64_t k = key(gpa, c.mode);
    // A block whose last instruction spills into the next page is keyed on its first page: the
    // next page must still map where it did when the block was decoded.
    auto second_page_ok = [&](const Block& b) {
        if (b.gpa2 == kNoPage) [[likely]]
            return true;
        try {
            return (translate_exec(c, next_page_linear(c, linear)) & ~0xfffULL) == b.gpa2;
        } catch (const GuestFault&) {
            return false; // decoded again: the block then ends before that instruction
        }
    };
    Fast& fast = m_fast[(gpa ^ (gpa >> 12)) & (kFastEntries - 1)];
    if (fast.key == k && valid(*fast.block) && second_page_ok(*fast.block)) [[likely]]
        return *fast.block;
    auto it = m_blocks.find(k);
    if (it != m_blocks.end() && valid(*it->second) && second_page_ok(*it->second)) {
        fast = Fast { k, it->second.get() };
        return *it->second;
    }
    if (m_blocks.size() + m_stale.size() >= kMaxBlocks)
        flush();
    auto block = decode(c, linear, gpa);
    Block* raw = block.get();
    auto& slot = m_blocks[k];
    if (slot)
        m_stale.push_back(std::move(slot));
    slot = std::move(block);
    fast = Fast { k, raw };
    // The new block's pages are code pages now: stop caching writes to them (ours included).
    sync_code_epoch(c);
    return *raw;
}

std::unique_ptr<Block> BlockCache::decode(Cpu& c, uint64_t linear, uint64_t gpa)
{
    auto block = std::make_unique<Block>();
    block->gpa = gpa;
    block->mode = c.mode;
    // Generation first, then the bytes: a concurrent write after this point makes the block stale.
    m_machine.mark_code_page(gpa);
    block->gen = m_machine.page_generation(gpa);
    const uint8_t* page = m_machine.ram(gpa & ~0xfffULL, 4096);
    if (!page) {
        // Executing from MMIO or a hole: there is no memory to fetch from.
        abort_engine("instruction fetch from a guest-physical address that is not RAM", gpa);
    }
    block->insns.reserve(16);
    uint64_t offset = gpa & 0xfff;
    uint64_t lin = linear;
    while (block->insns.size() < kMaxBlockInsns && offset < 4096) {
        Insn in;
        size_t avail = 4096 - offset;
        auto status = m_decoder.decode(c.mode, page + offset, avail, in);
        if (status == Decoder::Status::NeedMore) {
            // The instruction continues on the next page: fetch up to 15 bytes across.
            uint64_t gpa2;
            try {
                gpa2 = translate_exec(c, next_page_linear(c, lin)) & ~0xfffULL;
            } catch (const GuestFault&) {
                if (block->insns.empty())
                    throw; // the block's first instruction: the #PF is its own
                break; // end the block before it: its #PF comes when it is reached
            }
            const uint8_t* page2 = m_machine.ram(gpa2, 4096);
            if (!page2)
                abort_engine("instruction fetch from a guest-physical address that is not RAM", gpa2);
            uint8_t bytes[16] {};
            std::memcpy(bytes, page + offset, avail);
            std::memcpy(bytes + avail, page2, 15 - avail);
            status = m_decoder.decode(c.mode, bytes, 15, in);
            if (status == Decoder::Status::Ok) {
                m_machine.mark_code_page(gpa2);
                block->gpa2 = gpa2;
                block->gen2 = m_machine.page_generation(gpa2);
                block->insns.push_back(in);
                break;
            }
        }
        if (status != Decoder::Status::Ok) {
            if (block->insns.empty())
                raise_ud(); // the first instruction itself is invalid: #UD at c.rip
            break; // end the block before it; it faults when reached
        }
        block->insns.push_back(in);
        offset += in.length;
        lin += in.length;
        if (in.flags & kFlagEndsBlock)
            break;
    }
    block->count = static_cast<uint32_t>(block->insns.size());
    return block;
}

} // namespace vessel::soft
