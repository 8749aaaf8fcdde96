// Dirty-page tracking through KVM's dirty log: KVM_MEM_LOG_DIRTY_PAGES on every memory slot while
// tracking, KVM_GET_DIRTY_LOG per slot on each collect (which also write-protects the pages again,
// so the next collect sees only later writes). The log is per slot and slot-relative; the
// DirtyBitmap is guest-physical, so slot bits are moved to the slot's guest-physical pages (the
// slot above the MMIO hole starts at 4 GiB).
//
// Turning the log on or off re-registers every slot (a flags-only KVM_SET_USER_MEMORY_REGION).
// On kvm_pvm that re-registration is also what makes KVM drop state it derived from guest memory
// (shadow page tables; see HOST.md), so it happens only at start and stop, never per collect.
#include <sys/ioctl.h>

#include <vector>

#include "base/log.h"

#include "engine/kvm/kvm_engine.h"
#include "memory/dirty_bitmap.h"

namespace vessel {

Result<void> KvmEngine::set_slot_flags(uint32_t flags)
{
    for (auto& slot : m_slots) {
        kvm_userspace_memory_region r = slot;
        r.flags = flags;
        if (::ioctl(m_vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            return Error::from_errno(fmt::format("KVM_SET_USER_MEMORY_REGION (slot {}, {:#x}+{:#x}, flags {:#x})",
                r.slot, r.guest_phys_addr, r.memory_size, flags));
        slot.flags = flags;
    }
    return {};
}

Result<void> KvmEngine::start_dirty_tracking(DirtyBitmap& /*bitmap*/)
{
    if (m_dirty_tracking)
        return {};
    auto on = set_slot_flags(KVM_MEM_LOG_DIRTY_PAGES);
    if (!on.ok()) {
        (void)set_slot_flags(0);
        return on.release_error().with_context("starting KVM's dirty log");
    }
    // Slots mapped from now on (map_memory) are logged too.
    m_dirty_tracking = true;
    return {};
}

Result<void> KvmEngine::collect_dirty(DirtyBitmap& bitmap)
{
    if (!m_dirty_tracking)
        return make_error("the kvm engine is not tracking dirty pages (start_dirty_tracking first)");
    constexpr uint64_t kPageShift = DirtyBitmap::kPageShift;
    for (const auto& slot : m_slots) {
        uint64_t pages = slot.memory_size >> kPageShift;
        // KVM writes one bit per page of the slot, in 64-bit words.
        std::vector<uint64_t> bits((pages + 63) / 64);
        kvm_dirty_log log {};
        log.slot = slot.slot;
        log.dirty_bitmap = bits.data();
        if (::ioctl(m_vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
            return Error::from_errno(fmt::format("KVM_GET_DIRTY_LOG (slot {})", slot.slot));

        uint64_t first_page = slot.guest_phys_addr >> kPageShift;
        if (first_page % 64 == 0) {
            // Slot words line up with bitmap words (every slot starts on a 256 KiB boundary).
            uint64_t first_word = first_page / 64;
            for (uint64_t w = 0; w < bits.size(); ++w) {
                uint64_t word = first_word + w;
                uint64_t value = bits[w];
                uint64_t end_page = (word + 1) * 64;
                if (end_page > bitmap.pages() && word * 64 < bitmap.pages())
                    value &= (1ULL << (bitmap.pages() - word * 64)) - 1; // past the bitmap's end
                bitmap.mark_word(word, value);
            }
        } else {
            for (uint64_t w = 0; w < bits.size(); ++w)
                for (uint64_t v = bits[w]; v; v &= v - 1)
                    bitmap.mark_page(first_page + w * 64 + static_cast<uint64_t>(__builtin_ctzll(v)));
        }
    }
    return {};
}

void KvmEngine::stop_dirty_tracking()
{
    if (!m_dirty_tracking)
        return;
    auto off = set_slot_flags(0);
    if (!off.ok())
        log_warn("stopping KVM's dirty log: {}", off.error().message());
    m_dirty_tracking = false;
}

} // namespace vessel
