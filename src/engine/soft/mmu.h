// The software MMU: guest-linear → guest-physical through the guest's 4-level page tables (the
// walk sets accessed/dirty bits and raises #PF with the architectural error code), cached in a
// per-vCPU software TLB that maps linear pages straight to host pointers — the VMM's shadow of the
// guest page tables. A TLB hit is a shift, a mask, a compare and a load. Non-RAM physical
// addresses never enter the TLB: they go to the vCPU's LAPIC page or the MMIO bus every time.
//
// Dirty-page tracking (SoftEngine::start_dirty_tracking, QEMU's design): while a DirtyBitmap is
// set, a TLB entry gets write permission only for a page already marked dirty, so every write
// either goes through the slow path, which marks the page, or hits an entry of a page marked in
// this round; translated code's inline stores need no check of their own. collect_dirty() makes
// every vCPU drop its write entries (drop_write_entries), so the next write to each page marks it
// again. The page walker marks the paging-structure pages whose accessed/dirty bits it sets.
// Tracking off costs one load of the bitmap pointer on TLB fills and slow-path writes.
//
// Self-modifying code: a page holding decoded blocks is a "code page"; no TLB keeps a write
// entry for it (a new code page bumps the machine's code epoch, and every vCPU drops its write
// entries at its next block boundary), so every write to it takes the slow path, which bumps the
// page's generation; blocks remember the generation they were decoded at and are dropped when
// it changed.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

#include "engine/soft/cpu.h"

namespace vessel {
class DirtyBitmap;
} // namespace vessel

namespace vessel::soft {

enum class Access : uint8_t { Read, Write, Exec };

// Page-fault error code bits.
constexpr uint32_t kPfPresent = 1, kPfWrite = 2, kPfUser = 4, kPfRsvd = 8, kPfFetch = 16;

// State shared by all vCPUs of one soft engine.
class SoftMachine {
public:
    explicit SoftMachine(const GuestMemory& memory);

    const GuestMemory& memory() const { return m_memory; }
    // Host pointer of [gpa, gpa+len) in RAM, or nullptr (MMIO, hole, beyond RAM).
    uint8_t* ram(uint64_t gpa, uint64_t len) const;

    // Code-page tracking (see the file comment). Pages beyond RAM are never code pages.
    uint32_t page_generation(uint64_t gpa) const
    {
        uint64_t pfn = gpa >> 12;
        return pfn < m_pages ? m_page_gen[pfn].load(std::memory_order_acquire) : 0;
    }
    bool is_code_page(uint64_t gpa) const
    {
        uint64_t pfn = gpa >> 12;
        return pfn < m_pages && m_code_page[pfn].load(std::memory_order_relaxed);
    }
    void mark_code_page(uint64_t gpa);
    // A write reached a code page: invalidate its blocks (bumps the generation).
    void code_page_written(uint64_t gpa);
    uint64_t code_epoch() const { return m_code_epoch.load(std::memory_order_acquire); }
    // Bumped by every code_page_written(): while it stands still, no block became stale.
    uint64_t code_write_epoch() const { return m_code_write_epoch.load(std::memory_order_acquire); }
    const uint64_t* code_write_epoch_address() const { return reinterpret_cast<const uint64_t*>(&m_code_write_epoch); }

    // vCPUs whose `attention` is raised when a page becomes a code page, so that they drop
    // their write TLB entries (sync_code_epoch) before running on: translated code chains
    // blocks without looking at the epoch itself.
    void watch_code_epoch(std::atomic<bool>* attention)
    {
        uint32_t i = m_watchers_count.load(std::memory_order_relaxed);
        if (i < m_watchers.size()) {
            m_watchers[i] = attention;
            m_watchers_count.store(i + 1, std::memory_order_release);
        }
    }

    // The bitmap guest writes are recorded in, or nullptr (see the file comment). Set and cleared
    // with every vCPU stopped; vCPU threads mark it concurrently (its marks are atomic).
    DirtyBitmap* dirty_log() const { return m_dirty_log.load(std::memory_order_acquire); }
    void set_dirty_log(DirtyBitmap* log);
    // Every vCPU drops its TLB write entries before it runs guest code again (the code epoch
    // moves and their attention is raised, as for a new code page).
    void drop_write_entries();

    // Number of vCPUs of the VM (the topology CPUID reports); set before the vCPUs run.
    uint32_t vcpu_count() const { return m_vcpu_count; }
    void set_vcpu_count(uint32_t count) { m_vcpu_count = count ? count : 1; }

private:
    const GuestMemory& m_memory;
    uint64_t m_pages { 0 };
    std::unique_ptr<std::atomic<uint32_t>[]> m_page_gen;
    std::unique_ptr<std::atomic<uint8_t>[]> m_code_page;
    std::atomic<uint64_t> m_code_epoch { 0 };
    std::atomic<uint64_t> m_code_write_epoch { 0 };
    std::array<std::atomic<bool>*, 256> m_watchers {};
    std::atomic<uint32_t> m_watchers_count { 0 };
    std::atomic<DirtyBitmap*> m_dirty_log { nullptr };
    uint32_t m_vcpu_count { 1 };
};

// Full translation (TLB miss path). Throws #PF (GuestFault). `user` = the access is checked
// with user privilege. Fills the TLB when the target is RAM.
uint64_t translate(Cpu& c, uint64_t linear, Access access, bool user);

// Physical accesses (RAM, the vCPU's LAPIC page, or the MMIO bus; holes read as all ones).
void phys_read(Cpu& c, uint64_t gpa, void* out, unsigned size);
void phys_write(Cpu& c, uint64_t gpa, const void* in, unsigned size);

// Slow paths of the accessors below (TLB miss, page crossing, MMIO).
void linear_read_slow(Cpu& c, uint64_t linear, void* out, unsigned size, bool user);
void linear_write_slow(Cpu& c, uint64_t linear, const void* in, unsigned size, bool user);

[[gnu::always_inline]] inline TlbEntry& tlb_entry(Cpu& c, uint64_t linear, bool user)
{
    return c.tlb.e[user][(linear >> 12) & (kTlbEntries - 1)];
}

// Linear-address accessors with the current privilege (CPL 3 = user).
template<typename T>
[[gnu::always_inline]] inline T read_linear(Cpu& c, uint64_t linear)
{
    bool user = c.cpl == 3;
    TlbEntry& e = tlb_entry(c, linear, user);
    if ((linear & ~0xfffULL) == e.tag_read && (linear & 0xfff) <= 0x1000 - sizeof(T)) [[likely]] {
        T v;
        // SAFETY: the TLB only holds pages of guest RAM; the access stays inside the page.
        std::memcpy(&v, reinterpret_cast<const void*>(linear + e.addend), sizeof(T));
        return v;
    }
    T v;
    linear_read_slow(c, linear, &v, sizeof(T), user);
    return v;
}

template<typename T>
[[gnu::always_inline]] inline void write_linear(Cpu& c, uint64_t linear, T v)
{
    bool user = c.cpl == 3;
    TlbEntry& e = tlb_entry(c, linear, user);
    if ((linear & ~0xfffULL) == e.tag_write && (linear & 0xfff) <= 0x1000 - sizeof(T)) [[likely]] {
        // SAFETY: as in read_linear; write entries exist only for writable, dirty, non-code pages.
        std::memcpy(reinterpret_cast<void*>(linear + e.addend), &v, sizeof(T));
        return;
    }
    linear_write_slow(c, linear, &v, sizeof(T), user);
}

// Supervisor-privilege ("implicit") accesses: descriptor tables, TSS, IDT, interrupt stacks of
// CPL 0 handlers.
template<typename T>
inline T read_sys(Cpu& c, uint64_t linear)
{
    T v;
    linear_read_slow(c, linear, &v, sizeof(T), false);
    return v;
}
template<typename T>
inline void write_sys(Cpu& c, uint64_t linear, T v)
{
    linear_write_slow(c, linear, &v, sizeof(T), false);
}

// Linear address of seg:offset in the current mode (offset already truncated to the address
// size by the caller). No segment limit checks: Linux and our guests use flat segments.
[[gnu::always_inline]] inline uint64_t seg_linear(const Cpu& c, uint8_t seg, uint64_t offset)
{
    uint64_t lin = c.segbase[seg] + offset;
    if (c.mode != CpuMode::Long64)
        return lin & 0xffffffffULL;
    // A non-canonical reference through SS (stack operations, RSP/RBP-based operands) is
    // #SS(0); through any other segment the page walk raises #GP(0).
    if (seg == SS && static_cast<uint64_t>(static_cast<int64_t>(lin << 16) >> 16) != lin) [[unlikely]]
        raise_fault(kExcSS, 0);
    return lin;
}

template<typename T>
inline T read_seg(Cpu& c, uint8_t seg, uint64_t offset)
{
    return read_linear<T>(c, seg_linear(c, seg, offset));
}
template<typename T>
inline void write_seg(Cpu& c, uint8_t seg, uint64_t offset, T v)
{
    write_linear<T>(c, seg_linear(c, seg, offset), v);
}

// Host pointer for an access of `len` bytes at `linear` that stays in one page of RAM, after a
// full permission check (throws #PF); nullptr when the target is not RAM or crosses a page.
// Used for LOCKed read-modify-write (host atomics) and bulk string operations.
uint8_t* host_ptr(Cpu& c, uint64_t linear, unsigned len, Access access);

// Instruction fetch: guest-physical address of `linear` for execution (throws #PF).
uint64_t translate_exec(Cpu& c, uint64_t linear);

// After the machine's code epoch changed: drop write entries (see the file comment).
inline void sync_code_epoch(Cpu& c)
{
    uint64_t epoch = c.machine->code_epoch();
    if (epoch != c.code_epoch_seen) [[unlikely]] {
        c.code_epoch_seen = epoch;
        c.tlb.flush_writes();
    }
}

} // namespace vessel::soft
