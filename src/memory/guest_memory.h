// Guest RAM: one memfd mapped once into the VMM, carved into guest-physical regions that skip
// the 32-bit MMIO hole. Every access by the VMM goes through the bounds-checked accessors here:
// an address outside guest RAM is an error value, never a host access.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/result.h"

namespace vessel {

struct MemoryRegion {
    uint64_t guest_base;  // guest-physical start
    uint64_t size;        // bytes
    uint8_t* host;        // host mapping of the region
    uint64_t file_offset; // offset of the region in the backing memfd
};

enum class HugePages { No, Yes };

class GuestMemory {
public:
    // Creates guest RAM of `size` bytes (laid out around the MMIO hole).
    static Result<GuestMemory> create(uint64_t size, HugePages huge = HugePages::No);
    // Guest RAM of `size` bytes backed by a snapshot's memory file, mapped MAP_PRIVATE: pages are
    // read from the file on first touch, writes are copy-on-write and never reach the file. The
    // file must hold exactly `size` bytes (the same layout as the memfd: RAM below the MMIO hole,
    // then the rest).
    static Result<GuestMemory> map_file(const std::string& path, uint64_t size);
    // Guest RAM of `size` bytes as anonymous private memory (the memfd's layout, no file behind
    // it), for the Uffd restore backend: memory/uffd_memory.h registers it with a userfaultfd and
    // a page-fault handler fills the pages the guest touches.
    static Result<GuestMemory> create_anonymous(uint64_t size);

    enum class Backing { Memfd, PrivateFile, Anonymous };
    Backing backing() const { return m_backing; }

    // An fd that must live as long as the mapping (the Uffd backend's userfaultfd and its socket
    // to the handler); closed after the memory is unmapped.
    void keep_fd(int fd) { m_kept_fds.push_back(fd); }

    GuestMemory(GuestMemory&&) noexcept;
    GuestMemory& operator=(GuestMemory&&) noexcept;
    GuestMemory(const GuestMemory&) = delete;
    GuestMemory& operator=(const GuestMemory&) = delete;
    ~GuestMemory();

    uint64_t size() const { return m_size; }
    int fd() const { return m_fd; }
    const std::vector<MemoryRegion>& regions() const { return m_regions; }

    // Host pointer for [gpa, gpa+len) if the whole range lies in one RAM region, else nullptr.
    uint8_t* host_ptr(uint64_t gpa, uint64_t len) const;
    bool contains(uint64_t gpa, uint64_t len) const { return host_ptr(gpa, len) != nullptr; }

    Result<void> read(uint64_t gpa, std::span<uint8_t> out) const;
    Result<void> write(uint64_t gpa, std::span<const uint8_t> in);
    Result<void> fill(uint64_t gpa, uint8_t value, uint64_t len);

    template<typename T>
    Result<T> read_obj(uint64_t gpa) const
    {
        static_assert(std::is_trivially_copyable_v<T>);
        T value {};
        TRY(read(gpa, std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T))));
        return value;
    }

    template<typename T>
    Result<void> write_obj(uint64_t gpa, const T& value)
    {
        static_assert(std::is_trivially_copyable_v<T>);
        return write(gpa, std::span(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
    }

    // Gives the host the memory behind [gpa, gpa+len) back (the balloon): a hole in the memfd,
    // which then reads as zeros; with a private file mapping, the private copies are dropped and
    // the pages read the file's contents again (the guest made no promise about their contents);
    // anonymous memory is dropped with MADV_DONTNEED, which a userfaultfd reports to its handler
    // (UFFD_EVENT_REMOVE) so that it serves those pages as zeros when they fault again.
    Result<void> discard(uint64_t gpa, uint64_t len);

    // The guest-physical address whose byte sits at `offset` of the backing file (the memory
    // file's layout), and the other way round.
    uint64_t gpa_of_offset(uint64_t offset) const;

    // Highest guest-physical address + 1 of RAM.
    uint64_t end_address() const;

    // Writes the VMM makes to guest RAM are reported to an observer (the soft engine drops
    // decoded code of the pages; later the dirty log). write() and fill() report themselves;
    // code that writes through host_ptr() (device DMA) calls note_written() once it is done.
    using WriteObserver = std::function<void(uint64_t gpa, uint64_t len)>;
    void set_write_observer(WriteObserver observer) { m_write_observer = std::move(observer); }
    void note_written(uint64_t gpa, uint64_t len) const
    {
        if (m_write_observer && len)
            m_write_observer(gpa, len);
    }

private:
    GuestMemory() = default;
    void release();

    static void lay_out(GuestMemory& mem);

    int m_fd { -1 };
    Backing m_backing { Backing::Memfd };
    uint8_t* m_base { nullptr };
    uint64_t m_size { 0 };
    std::vector<MemoryRegion> m_regions;
    std::vector<int> m_kept_fds;
    WriteObserver m_write_observer;
};

} // namespace vessel
