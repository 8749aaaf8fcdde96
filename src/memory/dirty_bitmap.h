// One bit per 4 KiB guest-physical page, set when the page is written (by a vCPU, as the engine
// reports it, or by the VMM: device DMA, loaders). Diff snapshots and live migration read and
// clear it. Thread-safe: marking is a relaxed atomic OR (vCPU and device threads mark at once);
// take() swaps each word out, so a page written while the bitmap is read is never lost — it is
// either in this round or the next.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace vessel {

class DirtyBitmap {
public:
    static constexpr uint64_t kPageShift = 12;
    static constexpr uint64_t kPageSize = 1ULL << kPageShift;

    // Covers guest-physical addresses [0, end).
    explicit DirtyBitmap(uint64_t end)
        : m_pages((end + kPageSize - 1) >> kPageShift)
        , m_words(std::make_unique<std::atomic<uint64_t>[]>((m_pages + 63) / 64))
    {
        for (uint64_t i = 0; i < word_count(); ++i)
            m_words[i].store(0, std::memory_order_relaxed);
    }

    uint64_t pages() const { return m_pages; }
    uint64_t word_count() const { return (m_pages + 63) / 64; }

    void mark(uint64_t gpa, uint64_t len)
    {
        if (len == 0)
            return;
        uint64_t first = gpa >> kPageShift;
        uint64_t last = (gpa + len - 1) >> kPageShift;
        if (first >= m_pages)
            return;
        if (last >= m_pages)
            last = m_pages - 1;
        for (uint64_t p = first; p <= last; ++p)
            m_words[p / 64].fetch_or(1ULL << (p % 64), std::memory_order_relaxed);
    }
    void mark_page(uint64_t page)
    {
        if (page < m_pages)
            m_words[page / 64].fetch_or(1ULL << (page % 64), std::memory_order_relaxed);
    }
    // ORs a whole word (KVM's dirty log comes 64 pages at a time).
    void mark_word(uint64_t word, uint64_t bits)
    {
        if (word < word_count() && bits)
            m_words[word].fetch_or(bits, std::memory_order_relaxed);
    }
    bool test(uint64_t page) const
    {
        return page < m_pages && (m_words[page / 64].load(std::memory_order_relaxed) >> (page % 64)) & 1;
    }

    // The bits so far, cleared in the bitmap.
    std::vector<uint64_t> take()
    {
        std::vector<uint64_t> out(word_count());
        for (uint64_t i = 0; i < out.size(); ++i)
            out[i] = m_words[i].exchange(0, std::memory_order_acq_rel);
        return out;
    }
    uint64_t count() const
    {
        uint64_t n = 0;
        for (uint64_t i = 0; i < word_count(); ++i)
            n += static_cast<uint64_t>(__builtin_popcountll(m_words[i].load(std::memory_order_relaxed)));
        return n;
    }

private:
    uint64_t m_pages;
    std::unique_ptr<std::atomic<uint64_t>[]> m_words;
};

} // namespace vessel
