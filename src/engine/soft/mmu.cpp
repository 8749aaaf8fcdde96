#include "engine/soft/mmu.h"

#include <span>

#include "bus/bus.h"
#include "engine/engine.h"
#include "memory/dirty_bitmap.h"
#include "memory/guest_memory.h"

namespace vessel::soft {

namespace {

constexpr uint64_t kPteP = 1ULL << 0, kPteRw = 1ULL << 1, kPteUs = 1ULL << 2, kPteA = 1ULL << 5, kPteD = 1ULL << 6,
                   kPtePs = 1ULL << 7, kPteG = 1ULL << 8, kPteNx = 1ULL << 63;
// Physical-address bits we report in CPUID 0x80000008 (cpuid.cpp); bits above are reserved.
constexpr unsigned kPhysAddrBits = 40;
constexpr uint64_t kAddrMask = ((1ULL << kPhysAddrBits) - 1) & ~0xfffULL;
constexpr uint64_t kRsvdHigh = ~((1ULL << kPhysAddrBits) - 1) & ~kPteNx & ~(0x7ffULL << 52);

constexpr TlbEntry kEmptyEntry { kTlbInvalid, kTlbInvalid, kTlbInvalid, 0, 0, 0 };

// The vCPU's own LAPIC registers, when its APIC is enabled and `gpa` lies in their page.
bool in_apic_page(const Cpu& c, uint64_t gpa)
{
    return c.apic_page && (c.apic_base & (1ULL << 11)) && (gpa & ~0xfffULL) == (c.apic_base & ~0xfffULL);
}

bool canonical(uint64_t linear)
{
    return static_cast<uint64_t>(static_cast<int64_t>(linear << 16) >> 16) == linear;
}

[[noreturn]] void page_fault(uint64_t linear, uint32_t bits, Access access, bool user, bool nx_on)
{
    uint32_t err = bits;
    if (access == Access::Write)
        err |= kPfWrite;
    if (user)
        err |= kPfUser;
    if (access == Access::Exec && nx_on)
        err |= kPfFetch;
    raise_page_fault(linear, err);
}

// Reads a paging-structure entry; an entry outside RAM reads as all ones (reserved bits set).
uint64_t* pte_ptr(Cpu& c, uint64_t gpa)
{
    return reinterpret_cast<uint64_t*>(c.machine->ram(gpa, 8));
}

// Sets accessed/dirty bits in the paging-structure entry at guest-physical `pte_gpa`.
void set_bits(Cpu& c, uint64_t* pte, uint64_t pte_gpa, uint64_t bits)
{
    // SAFETY: pte points into guest RAM (pte_ptr checked it); other vCPUs may update the same
    // entry concurrently, as hardware page walkers do with locked operations.
    if ((__atomic_load_n(pte, __ATOMIC_RELAXED) & bits) != bits) {
        __atomic_fetch_or(pte, bits, __ATOMIC_SEQ_CST);
        if (DirtyBitmap* log = c.machine->dirty_log()) [[unlikely]]
            log->mark(pte_gpa, 8);
    }
}

// `writing`: the fill is for a write (with dirty tracking on, only that makes the entry
// writable for a page not yet marked; see mmu.h).
void fill_tlb(
    Cpu& c, uint64_t linear, uint64_t gpa, bool user, bool can_write, bool can_exec, bool writing, bool global = false)
{
    uint64_t gpa_page = gpa & ~0xfffULL;
    uint8_t* host = c.machine->ram(gpa_page, 4096);
    if (!host)
        return;
    bool write_ok = can_write && !c.machine->is_code_page(gpa_page);
    if (write_ok) {
        if (DirtyBitmap* log = c.machine->dirty_log()) [[unlikely]] {
            if (writing)
                log->mark_page(gpa_page >> DirtyBitmap::kPageShift);
            else if (!log->test(gpa_page >> DirtyBitmap::kPageShift))
                write_ok = false;
        }
    }
    uint64_t page = linear & ~0xfffULL;
    TlbEntry& e = tlb_entry(c, linear, user);
    e.tag_read = page;
    e.tag_write = write_ok ? page : kTlbInvalid;
    e.tag_exec = can_exec ? page : kTlbInvalid;
    e.addend = reinterpret_cast<uint64_t>(host) - page;
    e.gpa_page = gpa_page;
    e.global = global;
    if (!global) {
        Tlb& t = c.tlb;
        if (t.nonglobal_count < Tlb::kTracked)
            t.nonglobal[t.nonglobal_count] = static_cast<uint16_t>(&e - &t.e[0][0]);
        if (t.nonglobal_count <= Tlb::kTracked)
            ++t.nonglobal_count;
    }
}

} // namespace

void Tlb::flush()
{
    ++gen;
    ++gen_global;
    for (auto& level : e)
        for (auto& entry : level)
            entry = kEmptyEntry;
    nonglobal_count = 0;
}

void Tlb::flush_page(uint64_t linear)
{
    // The page before too: a block starting there may end with an instruction that spills into
    // this page (the jump cache keys it on its first page only).
    ++page_gen[(linear >> 12) & (kPageGens - 1)];
    ++page_gen[((linear >> 12) - 1) & (kPageGens - 1)];
    for (auto& level : e) {
        auto& entry = level[(linear >> 12) & (kTlbEntries - 1)];
        entry = kEmptyEntry;
    }
}

void Tlb::flush_range(uint64_t linear, uint64_t pages)
{
    for (uint64_t i = 0; i < pages; ++i)
        flush_page(linear + (i << 12));
}

void Tlb::flush_nonglobal()
{
    ++gen;
    if (nonglobal_count <= kTracked) {
        // Entries refilled as global since they were noted are kept.
        TlbEntry* all = &e[0][0];
        for (uint32_t i = 0; i < nonglobal_count; ++i)
            if (!all[nonglobal[i]].global)
                all[nonglobal[i]] = kEmptyEntry;
    } else {
        for (auto& level : e)
            for (auto& entry : level)
                if (!entry.global)
                    entry = kEmptyEntry;
    }
    nonglobal_count = 0;
}

void Tlb::flush_writes()
{
    for (auto& level : e)
        for (auto& entry : level)
            entry.tag_write = kTlbInvalid;
}

SoftMachine::SoftMachine(const GuestMemory& memory)
    : m_memory(memory)
{
    m_pages = (memory.end_address() + 4095) >> 12;
    m_page_gen = std::make_unique<std::atomic<uint32_t>[]>(m_pages);
    m_code_page = std::make_unique<std::atomic<uint8_t>[]>(m_pages);
}

uint8_t* SoftMachine::ram(uint64_t gpa, uint64_t len) const
{
    return m_memory.host_ptr(gpa, len);
}

void SoftMachine::mark_code_page(uint64_t gpa)
{
    uint64_t pfn = gpa >> 12;
    if (pfn >= m_pages)
        return;
    if (!m_code_page[pfn].exchange(1, std::memory_order_acq_rel))
        drop_write_entries();
}

void SoftMachine::drop_write_entries()
{
    m_code_epoch.fetch_add(1, std::memory_order_acq_rel);
    uint32_t n = m_watchers_count.load(std::memory_order_acquire);
    for (uint32_t i = 0; i < n; ++i)
        m_watchers[i]->store(true, std::memory_order_release);
}

void SoftMachine::set_dirty_log(DirtyBitmap* log)
{
    m_dirty_log.store(log, std::memory_order_release);
}

void SoftMachine::code_page_written(uint64_t gpa)
{
    uint64_t pfn = gpa >> 12;
    if (pfn >= m_pages)
        return;
    m_code_page[pfn].store(0, std::memory_order_relaxed);
    m_page_gen[pfn].fetch_add(1, std::memory_order_acq_rel);
    m_code_write_epoch.fetch_add(1, std::memory_order_acq_rel);
}

uint64_t translate(Cpu& c, uint64_t linear, Access access, bool user)
{
    if (!(c.cr0 & x86::kCr0Pg)) {
        uint64_t gpa = c.mode == CpuMode::Long64 ? linear : (linear & 0xffffffffULL);
        fill_tlb(c, linear, gpa, user, true, true, access == Access::Write);
        return gpa;
    }
    bool nx_on = (c.efer & x86::kEferNxe) != 0;
    uint64_t rsvd = kRsvdHigh | (nx_on ? 0 : kPteNx);
    bool can_write = true, can_user = true, can_exec = true;
    uint64_t table;
    int level;
    if (c.efer & x86::kEferLma) {
        if (!canonical(linear))
            raise_fault(kExcGP, 0);
        table = c.cr3 & kAddrMask;
        level = 4;
    } else if (c.cr4 & x86::kCr4Pae) {
        // PAE: the PDPTE (CR3 bits 31:5 point at 4 entries) has no R/W, U/S or A bits.
        uint64_t* pdpte = pte_ptr(c, (c.cr3 & 0xffffffe0ULL) + ((linear >> 30) & 3) * 8);
        uint64_t e = pdpte ? __atomic_load_n(pdpte, __ATOMIC_RELAXED) : ~0ULL;
        if (!(e & kPteP))
            page_fault(linear, 0, access, user, nx_on);
        table = e & kAddrMask;
        level = 2;
        linear &= 0xffffffffULL;
    } else {
        abort_engine("32-bit paging without PAE is not supported by the soft engine", linear);
    }
    uint64_t gpa = 0;
    for (;; --level) {
        unsigned shift = 12 + 9 * (level - 1);
        uint64_t pte_gpa = table + ((linear >> shift) & 511) * 8;
        uint64_t* pte = pte_ptr(c, pte_gpa);
        uint64_t e = pte ? __atomic_load_n(pte, __ATOMIC_RELAXED) : ~0ULL;
        if (!(e & kPteP))
            page_fault(linear, 0, access, user, nx_on);
        bool large = (level == 2 || level == 3) && (e & kPtePs);
        uint64_t level_rsvd = rsvd;
        if (level == 4)
            level_rsvd |= kPtePs; // no 512 GiB pages
        if (large)
            level_rsvd |= ((1ULL << shift) - 1) & ~0x1fffULL; // frame bits below the page size
        if (!pte || (e & level_rsvd))
            page_fault(linear, kPfPresent | kPfRsvd, access, user, nx_on);
        can_write &= (e & kPteRw) != 0;
        can_user &= (e & kPteUs) != 0;
        can_exec &= !(nx_on && (e & kPteNx));
        if (level == 1 || large) {
            bool allowed = true;
            if (user && !can_user)
                allowed = false;
            if (access == Access::Write && !can_write && (user || (c.cr0 & x86::kCr0Wp)))
                allowed = false;
            if (access == Access::Exec && !can_exec)
                allowed = false;
            if (!allowed)
                page_fault(linear, kPfPresent, access, user, nx_on);
            set_bits(c, pte, pte_gpa, access == Access::Write ? (kPteA | kPteD) : kPteA);
            bool dirty = access == Access::Write || (e & kPteD);
            uint64_t frame = e & kAddrMask & ~((1ULL << shift) - 1);
            gpa = frame | (linear & ((1ULL << shift) - 1));
            bool write_ok = dirty && (can_write || (!user && !(c.cr0 & x86::kCr0Wp)));
            bool exec_ok = can_exec && (!user || can_user);
            bool global = (c.cr4 & x86::kCr4Pge) && (e & kPteG);
            if (!user || can_user)
                fill_tlb(c, linear, gpa, user, write_ok, exec_ok, access == Access::Write, global);
            if (large) {
                c.tlb_has_large = true;
                if (shift == 30)
                    c.tlb_has_1g = true;
            }
            return gpa;
        }
        set_bits(c, pte, pte_gpa, kPteA);
        table = e & kAddrMask;
    }
}

void phys_read(Cpu& c, uint64_t gpa, void* out, unsigned size)
{
    if (uint8_t* host = c.machine->ram(gpa, size)) {
        std::memcpy(out, host, size);
        return;
    }
    auto bytes = std::span(static_cast<uint8_t*>(out), size);
    if (in_apic_page(c, gpa)) {
        c.apic_page->read(gpa & 0xfff, bytes);
        return;
    }
    c.io->mmio_read(gpa, bytes);
}

void phys_write(Cpu& c, uint64_t gpa, const void* in, unsigned size)
{
    if (uint8_t* host = c.machine->ram(gpa, size)) {
        if (DirtyBitmap* log = c.machine->dirty_log()) [[unlikely]]
            log->mark(gpa, size);
        if (c.machine->is_code_page(gpa) || c.machine->is_code_page(gpa + size - 1)) {
            c.machine->code_page_written(gpa);
            c.machine->code_page_written(gpa + size - 1);
            c.stop_block = true;
        }
        std::memcpy(host, in, size);
        return;
    }
    auto bytes = std::span(static_cast<const uint8_t*>(in), size);
    if (in_apic_page(c, gpa)) {
        c.apic_page->write(gpa & 0xfff, bytes);
        c.stop_block = true; // EOI/TPR/ICR writes can make an interrupt deliverable
        return;
    }
    c.io->mmio_write(gpa, bytes);
    c.stop_block = true; // a device may have raised an interrupt or stopped the VM
}

void linear_read_slow(Cpu& c, uint64_t linear, void* out, unsigned size, bool user)
{
    unsigned first = static_cast<unsigned>(std::min<uint64_t>(size, 0x1000 - (linear & 0xfff)));
    uint64_t gpa = translate(c, linear, Access::Read, user);
    if (first == size) {
        phys_read(c, gpa, out, size);
        return;
    }
    uint64_t gpa2 = translate(c, linear + first, Access::Read, user);
    phys_read(c, gpa, out, first);
    phys_read(c, gpa2, static_cast<uint8_t*>(out) + first, size - first);
}

void linear_write_slow(Cpu& c, uint64_t linear, const void* in, unsigned size, bool user)
{
    unsigned first = static_cast<unsigned>(std::min<uint64_t>(size, 0x1000 - (linear & 0xfff)));
    uint64_t gpa = translate(c, linear, Access::Write, user);
    if (first == size) {
        phys_write(c, gpa, in, size);
        return;
    }
    // Both pages are checked before either is written: a fault leaves memory unchanged.
    uint64_t gpa2 = translate(c, linear + first, Access::Write, user);
    phys_write(c, gpa, in, first);
    phys_write(c, gpa2, static_cast<const uint8_t*>(in) + first, size - first);
}

uint8_t* host_ptr(Cpu& c, uint64_t linear, unsigned len, Access access)
{
    if ((linear & 0xfff) + len > 0x1000)
        return nullptr;
    bool user = c.cpl == 3;
    TlbEntry& e = tlb_entry(c, linear, user);
    uint64_t page = linear & ~0xfffULL;
    if ((access == Access::Write && e.tag_write == page) || (access == Access::Read && e.tag_read == page))
        return reinterpret_cast<uint8_t*>(linear + e.addend);
    uint64_t gpa = translate(c, linear, access, user);
    uint8_t* host = c.machine->ram(gpa, len);
    if (host && access == Access::Write) {
        if (DirtyBitmap* log = c.machine->dirty_log()) [[unlikely]]
            log->mark(gpa, len);
        if (c.machine->is_code_page(gpa)) {
            c.machine->code_page_written(gpa);
            c.stop_block = true;
        }
    }
    return host;
}

uint64_t translate_exec(Cpu& c, uint64_t linear)
{
    bool user = c.cpl == 3;
    TlbEntry& e = tlb_entry(c, linear, user);
    if ((linear & ~0xfffULL) == e.tag_exec)
        return e.gpa_page | (linear & 0xfff);
    return translate(c, linear, Access::Exec, user);
}

} // namespace vessel::soft
