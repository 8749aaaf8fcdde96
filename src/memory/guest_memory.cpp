#include "memory/guest_memory.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

    lay_out(mem);
    return mem;
}

void GuestMemory::lay_out(GuestMemory& mem)
{
    uint64_t low = std::min(mem.m_size, layout::kMmioHoleStart);
    mem.m_regions.push_back(MemoryRegion { 0, low, mem.m_base, 0 });
    if (mem.m_size > low)
        mem.m_regions.push_back(MemoryRegion { layout::k4GiB, mem.m_size - low, mem.m_base + low, low });
}

Result<GuestMemory> GuestMemory::map_file(const std::string& path, uint64_t size)
{
    if (size < layout::kMinRam || size % 4096 != 0)
        return make_error("memory file '{}': a guest of {} bytes is not a valid size", path, size);
    GuestMemory mem;
    mem.m_fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (mem.m_fd < 0)
        return Error::from_errno(fmt::format("memory file '{}': cannot open", path));
    struct stat st {};
    if (::fstat(mem.m_fd, &st) != 0)
        return Error::from_errno(fmt::format("memory file '{}': fstat", path));
    if (!S_ISREG(st.st_mode))
        return make_error("memory file '{}': not a regular file", path);
    if (static_cast<uint64_t>(st.st_size) != size)
        return make_error("memory file '{}' holds {} bytes, but the snapshot's guest has {} bytes of RAM", path,
            st.st_size, size);
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, mem.m_fd, 0);
    if (base == MAP_FAILED)
        return Error::from_errno(fmt::format("memory file '{}': cannot map {} bytes", path, size));
    mem.m_base = static_cast<uint8_t*>(base);
    mem.m_size = size;
    mem.m_backing = Backing::PrivateFile;
    ::madvise(base, size, MADV_DONTDUMP);
    lay_out(mem);
    return mem;
}

Result<GuestMemory> GuestMemory::create_anonymous(uint64_t size)
{
    if (size < layout::kMinRam || size % 4096 != 0)
        return make_error("guest memory of {} bytes is not a valid size", size);
    GuestMemory mem;
    // Private and unreserved: a page exists once something touches it (or a userfaultfd handler
    // fills it).
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return Error::from_errno(fmt::format("cannot map {} bytes of guest RAM", size));
    mem.m_base = static_cast<uint8_t*>(base);
    mem.m_size = size;
    mem.m_backing = Backing::Anonymous;
    ::madvise(base, size, MADV_DONTDUMP);
    // A child process (a helper the VMM runs) has no use for guest RAM: no copy-on-write sharing.
    ::madvise(base, size, MADV_DONTFORK);
    lay_out(mem);
    return mem;
}

Result<void> GuestMemory::discard(uint64_t gpa, uint64_t len)
{
    for (const MemoryRegion& r : m_regions) {
        if (gpa < r.guest_base || gpa - r.guest_base >= r.size)
            continue;
        if (len > r.size - (gpa - r.guest_base))
            return make_error("discard of {} bytes at {:#x} crosses the end of guest RAM", len, gpa);
        uint64_t offset = r.file_offset + (gpa - r.guest_base);
        if (m_backing == Backing::Memfd) {
            if (::fallocate(m_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(len))
                != 0)
                return Error::from_errno("punching a hole in guest RAM");
        } else if (::madvise(r.host + (gpa - r.guest_base), len, MADV_DONTNEED) != 0) {
            return Error::from_errno("dropping guest pages");
        }
        note_written(gpa, len);
        return {};
    }
    return make_error("discard of {} bytes at {:#x} is outside guest RAM", len, gpa);
}

uint64_t GuestMemory::gpa_of_offset(uint64_t offset) const
{
    for (const MemoryRegion& r : m_regions)
        if (offset >= r.file_offset && offset - r.file_offset < r.size)
            return r.guest_base + (offset - r.file_offset);
    return UINT64_MAX;
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept { *this = std::move(other); }

GuestMemory& GuestMemory::operator=(GuestMemory&& other) noexcept
{
    if (this != &other) {
        release();
        m_fd = std::exchange(other.m_fd, -1);
        m_backing = other.m_backing;
        m_base = std::exchange(other.m_base, nullptr);
        m_size = std::exchange(other.m_size, 0);
        m_regions = std::move(other.m_regions);
        other.m_regions.clear();
        m_kept_fds = std::move(other.m_kept_fds);
        other.m_kept_fds.clear();
        m_write_observer = std::move(other.m_write_observer);
    }
    return *this;
}

GuestMemory::~GuestMemory()
{
    release();
}

void GuestMemory::release()
{
    if (m_base)
        ::munmap(m_base, m_size);
    if (m_fd >= 0)
        ::close(m_fd);
    for (int fd : m_kept_fds)
        ::close(fd);
    m_kept_fds.clear();
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
