#include "memory/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "arch/x86/layout.h"

namespace vessel {

Result<GuestMemory> GuestMemory::create(uint64_t size, HugePages huge)
{
    if (size < layout::kMinRam)
        return make_error("guest memory of {} bytes is too small (minimum {} MiB)", size,
                          layout::kMinRam / layout::MiB);
    uint64_t page = huge == HugePages::Yes ? 2 * layout::MiB : 4096;
    if (size % page != 0)
        return make_error("guest memory size {} is not a multiple of {} bytes", size, page);

    GuestMemory mem;
    unsigned flags = MFD_CLOEXEC | (huge == HugePages::Yes ? MFD_HUGETLB : 0u);
    mem.m_fd = ::memfd_create("vessel-guest-ram", flags);
    if (mem.m_fd < 0)
        return Error::from_errno("memfd_create for guest RAM");
    if (::ftruncate(mem.m_fd, static_cast<off_t>(size)) != 0)
        return Error::from_errno(fmt::format("cannot size guest RAM to {} bytes", size));
    // Ordinary RAM: MAP_NORESERVE, populated lazily as the guest touches it. Huge pages are
    // reserved at mmap time instead, so a shortage is an error now rather than SIGBUS later.
    int map_flags = MAP_SHARED | (huge == HugePages::Yes ? 0 : MAP_NORESERVE);
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, map_flags, mem.m_fd, 0);
    if (base == MAP_FAILED) {
        if (huge == HugePages::Yes)
            return Error::from_errno(fmt::format("cannot reserve {} MiB of guest RAM in 2 MiB huge pages (are enough "
                                                 "reserved in /proc/sys/vm/nr_hugepages?)",
                                                 size >> 20));
        return Error::from_errno(fmt::format("cannot map {} bytes of guest RAM", size));
    }
    mem.m_base = static_cast<uint8_t*>(base);
    mem.m_size = size;
    // Guest RAM is not worth dumping with the VMM; keep core files small.
    ::madvise(base, size, MADV_DONTDUMP);

    uint64_t low = std::min(size, layout::kMmioHoleStart);
    mem.m_regions.push_back(MemoryRegion { 0, low, mem.m_base, 0 });
    if (size > low)
        mem.m_regions.push_back(MemoryRegion { layout::k4GiB, size - low, mem.m_base + low, low });
    return mem;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept { *this = std::move(other); }

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept
{
    if (this != &other) {
        release();
        m_fd = std::exchange(other.m_fd, -1);
        m_base = std::exchange(other.m_base, nullptr);
        m_size = std::exchange(other.m_size, 0);
        m_regions = std::move(other.m_regions);
        other.m_regions.clear();
        m_write_observer = std::move(other.m_write_observer);
    }
    return *this;
}

GuestMemory::~GuestMemory() { release(); }

void GuestMemory::release()
{
    if (m_base)
        ::munmap(m_base, m_size);
    if (m_fd >= 0)
        ::close(m_fd);
    m_base = nullptr;
    m_fd = -1;
}

uint8_t* GuestMemory::host_ptr(uint64_t gpa, uint64_t len) const
{
    for (const auto& region : m_regions) {
        if (gpa >= region.guest_base && gpa - region.guest_base < region.size) {
            uint64_t offset = gpa - region.guest_base;
            if (len > region.size - offset)
                return nullptr;
            // SAFETY: offset + len <= region.size, so the range lies inside this mapping.
            return region.host + offset;
        }
    }
    return nullptr;
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const
{
    uint8_t* src = host_ptr(gpa, out.size());
    if (!src)
        return make_error("guest read of {} bytes at {:#x} is outside guest RAM", out.size(), gpa);
    std::memcpy(out.data(), src, out.size());
    return {};
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> in)
{
    uint8_t* dst = host_ptr(gpa, in.size());
    if (!dst)
        return make_error("guest write of {} bytes at {:#x} is outside guest RAM", in.size(), gpa);
    std::memcpy(dst, in.data(), in.size());
    note_written(gpa, in.size());
    return {};
}

Result<void> GuestMemory::fill(uint64_t gpa, uint8_t value, uint64_t len)
{
    uint8_t* dst = host_ptr(gpa, len);
    if (!dst)
        return make_error("guest fill of {} bytes at {:#x} is outside guest RAM", len, gpa);
    std::memset(dst, value, len);
    note_written(gpa, len);
    return {};
}

uint64_t GuestMemory::end_address() const
{
    const auto& last = m_regions.back();
    return last.guest_base + last.size;
}

} // namespace vessel
