#include "snapshot/memory_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "memory/guest_memory.h"

namespace vessel::snapshot {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kProgressStep = 64ULL << 20;

bool page_is_zero(const uint8_t* page)
{
    const auto* words = reinterpret_cast<const uint64_t*>(page);
    for (size_t i = 0; i < kPage / 8; i += 8) {
        if (words[i] | words[i + 1] | words[i + 2] | words[i + 3] | words[i + 4] | words[i + 5] | words[i + 6]
            | words[i + 7])
            return false;
    }
    return true;
}

// Writes runs of pages into a temporary file beside `path`; commit() syncs it and renames it over
// `path`. Destroyed uncommitted, it removes the temporary file.
class SparseWriter {
public:
    static Result<SparseWriter> open(const std::string& path, uint64_t size)
    {
        SparseWriter w;
        std::filesystem::path target(path);
        w.m_path = path;
        w.m_tmp = (target.parent_path() / ("." + target.filename().string() + ".tmp")).string();
        w.m_fd = ::open(w.m_tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (w.m_fd < 0)
            return Error::from_errno(fmt::format("memory file '{}': cannot create '{}'", path, w.m_tmp));
        if (::ftruncate(w.m_fd, static_cast<off_t>(size)) != 0)
            return Error::from_errno(fmt::format("memory file '{}': cannot size it to {} bytes", path, size));
        return w;
    }
    SparseWriter(SparseWriter&& o) noexcept
        : m_fd(std::exchange(o.m_fd, -1))
        , m_path(std::move(o.m_path))
        , m_tmp(std::move(o.m_tmp))
        , m_pages(o.m_pages)
    {
    }
    SparseWriter& operator=(SparseWriter&&) = delete;
    ~SparseWriter()
    {
        if (m_fd >= 0) {
            ::close(m_fd);
            ::unlink(m_tmp.c_str());
        }
    }

    Result<void> write(uint64_t offset, const uint8_t* data, uint64_t len)
    {
        while (len > 0) {
            ssize_t n = ::pwrite(m_fd, data, len, static_cast<off_t>(offset));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return Error::from_errno(fmt::format("memory file '{}': writing at offset {:#x}", m_path, offset));
            data += n;
            offset += static_cast<uint64_t>(n);
            len -= static_cast<uint64_t>(n);
        }
        return {};
    }
    void count(uint64_t pages) { m_pages += pages; }

    Result<MemoryFileStats> commit()
    {
        if (::fsync(m_fd) != 0)
            return Error::from_errno(fmt::format("memory file '{}': fsync", m_path));
        struct stat st { };
        ::fstat(m_fd, &st);
        ::close(std::exchange(m_fd, -1));
        if (::rename(m_tmp.c_str(), m_path.c_str()) != 0) {
            auto err = Error::from_errno(fmt::format("memory file '{}': rename", m_path));
            ::unlink(m_tmp.c_str());
            return err;
        }
        return MemoryFileStats { m_pages, static_cast<uint64_t>(st.st_blocks) * 512 };
    }

private:
    SparseWriter() = default;
    int m_fd { -1 };
    std::string m_path;
    std::string m_tmp;
    uint64_t m_pages { 0 };
};

// The host address of file offset `offset` of guest RAM (nullptr outside it).
const uint8_t* host_of_offset(const GuestMemory& memory, uint64_t offset)
{
    for (const MemoryRegion& r : memory.regions())
        if (offset >= r.file_offset && offset - r.file_offset < r.size)
            return r.host + (offset - r.file_offset);
    return nullptr;
}

// Data extents [start, end) of `fd` in [0, size): what SEEK_DATA/SEEK_HOLE report.
std::vector<std::pair<uint64_t, uint64_t>> data_extents(int fd, uint64_t size)
{
    std::vector<std::pair<uint64_t, uint64_t>> out;
    uint64_t pos = 0;
    while (pos < size) {
        off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0)
            break; // ENXIO: no data after pos
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
            hole = static_cast<off_t>(size);
        out.emplace_back(static_cast<uint64_t>(data) & ~(kPage - 1),
            std::min<uint64_t>(size, (static_cast<uint64_t>(hole) + kPage - 1) & ~(kPage - 1)));
        pos = static_cast<uint64_t>(hole);
    }
    return out;
}

// Pages of guest RAM that may hold something other than zeros, one flag per page of the file.
// A memfd knows exactly which of its pages exist. A private file mapping (a restored guest) holds
// the file's data extents plus the pages the guest wrote since (anonymous copies: present in the
// page tables or swapped out, per /proc/self/pagemap).
Result<std::vector<bool>> candidate_pages(const GuestMemory& memory)
{
    uint64_t pages = memory.size() / kPage;
    // Anonymous memory filled by a userfaultfd handler (the Uffd restore backend): a page it has
    // not served yet holds the handler's data, unknown here; reading it has the handler serve it.
    if (memory.backing() == GuestMemory::Backing::Anonymous)
        return std::vector<bool>(pages, true);
    std::vector<bool> out(pages, false);
    for (auto [start, end] : data_extents(memory.fd(), memory.size()))
        for (uint64_t p = start / kPage; p < end / kPage && p < pages; ++p)
            out[p] = true;
    if (memory.backing() == GuestMemory::Backing::Memfd)
        return out;
    int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return Error::from_errno("reading /proc/self/pagemap");
    std::vector<uint64_t> entries(4096);
    for (const MemoryRegion& r : memory.regions()) {
        uint64_t first = reinterpret_cast<uint64_t>(r.host) / kPage;
        for (uint64_t done = 0; done < r.size / kPage;) {
            uint64_t n = std::min<uint64_t>(entries.size(), r.size / kPage - done);
            ssize_t got = ::pread(fd, entries.data(), n * 8, static_cast<off_t>((first + done) * 8));
            if (got != static_cast<ssize_t>(n * 8)) {
                ::close(fd);
                return make_error("reading /proc/self/pagemap: short read");
            }
            for (uint64_t i = 0; i < n; ++i) {
                uint64_t e = entries[i];
                bool present = e >> 63 & 1, swapped = e >> 62 & 1, file_page = e >> 61 & 1;
                if ((present && !file_page) || swapped)
                    out[(r.file_offset / kPage) + done + i] = true;
            }
            done += n;
        }
    }
    ::close(fd);
    return out;
}

class Progress {
public:
    Progress(ProgressFn fn, uint64_t total)
        : m_fn(std::move(fn))
        , m_total(total)
    {
    }
    void at(uint64_t done)
    {
        if (m_fn && done >= m_next) {
            m_fn(done, m_total);
            m_next = done + kProgressStep;
        }
    }
    void finish()
    {
        if (m_fn)
            m_fn(m_total, m_total);
    }

private:
    ProgressFn m_fn;
    uint64_t m_total;
    uint64_t m_next { 0 };
};

} // namespace

Result<MemoryFileStats> write_full_memory(const GuestMemory& memory, const std::string& path, ProgressFn progress_fn)
{
    auto writer = TRY(SparseWriter::open(path, memory.size()));
    auto candidates = TRY(candidate_pages(memory));
    Progress progress(std::move(progress_fn), memory.size());
    uint64_t pages = candidates.size();
    uint64_t run_start = 0, run_len = 0; // a run of non-zero pages, written at once
    auto flush = [&]() -> Result<void> {
        if (run_len) {
            TRY(writer.write(run_start * kPage, host_of_offset(memory, run_start * kPage), run_len * kPage));
            writer.count(run_len);
        }
        run_len = 0;
        return {};
    };
    for (uint64_t p = 0; p < pages; ++p) {
        const uint8_t* host = host_of_offset(memory, p * kPage);
        bool data = candidates[p] && host && !page_is_zero(host);
        // A run never crosses a region boundary (the host mappings are contiguous anyway).
        if (data && run_len && run_start + run_len == p
            && host_of_offset(memory, run_start * kPage) + run_len * kPage == host && run_len < 256) {
            ++run_len;
        } else {
            TRY(flush());
            if (data) {
                run_start = p;
                run_len = 1;
            }
        }
        progress.at(p * kPage);
    }
    TRY(flush());
    auto stats = TRY(writer.commit());
    progress.finish();
    return stats;
}

Result<MemoryFileStats> write_diff_memory(
    const GuestMemory& memory, const std::vector<uint64_t>& dirty, const std::string& path, ProgressFn progress_fn)
{
    auto writer = TRY(SparseWriter::open(path, memory.size()));
    Progress progress(std::move(progress_fn), memory.size());
    for (const MemoryRegion& r : memory.regions()) {
        uint64_t first = r.guest_base / kPage, count = r.size / kPage;
        for (uint64_t i = 0; i < count; ++i) {
            uint64_t page = first + i;
            if (page / 64 >= dirty.size())
                break;
            if (!(dirty[page / 64] >> (page % 64) & 1))
                continue;
            // Zero pages too: in a diff, a hole means "unchanged".
            uint64_t run = 1;
            while (i + run < count && run < 256 && (page + run) / 64 < dirty.size()
                && (dirty[(page + run) / 64] >> ((page + run) % 64) & 1))
                ++run;
            TRY(writer.write(r.file_offset + i * kPage, r.host + i * kPage, run * kPage));
            writer.count(run);
            i += run - 1;
            progress.at(r.file_offset + i * kPage);
        }
    }
    auto stats = TRY(writer.commit());
    progress.finish();
    return stats;
}

Result<uint64_t> merge_memory_files(const std::string& base, const std::vector<std::string>& diffs)
{
    int out = ::open(base.c_str(), O_WRONLY | O_CLOEXEC);
    if (out < 0)
        return Error::from_errno(fmt::format("memory file '{}': cannot open for writing", base));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } close_out { out };
    struct stat base_st { };
    if (::fstat(out, &base_st) != 0 || !S_ISREG(base_st.st_mode))
        return make_error("memory file '{}': not a regular file", base);
    uint64_t copied = 0;
    std::vector<uint8_t> buffer(1 << 20);
    for (const auto& diff : diffs) {
        int in = ::open(diff.c_str(), O_RDONLY | O_CLOEXEC);
        if (in < 0)
            return Error::from_errno(fmt::format("memory file '{}': cannot open", diff));
        Closer close_in { in };
        struct stat st { };
        if (::fstat(in, &st) != 0 || !S_ISREG(st.st_mode))
            return make_error("memory file '{}': not a regular file", diff);
        if (st.st_size != base_st.st_size)
            return make_error("memory file '{}' holds {} bytes, its base '{}' {}: not a diff of that base", diff,
                st.st_size, base, base_st.st_size);
        for (auto [start, end] : data_extents(in, static_cast<uint64_t>(st.st_size))) {
            for (uint64_t pos = start; pos < end;) {
                size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), end - pos));
                ssize_t got = ::pread(in, buffer.data(), n, static_cast<off_t>(pos));
                if (got <= 0)
                    return Error::from_errno(fmt::format("memory file '{}': reading at {:#x}", diff, pos));
                for (ssize_t done = 0; done < got;) {
                    ssize_t w = ::pwrite(
                        out, buffer.data() + done, static_cast<size_t>(got - done), static_cast<off_t>(pos) + done);
                    if (w < 0 && errno == EINTR)
                        continue;
                    if (w <= 0)
                        return Error::from_errno(fmt::format("memory file '{}': writing at {:#x}", base, pos));
                    done += w;
                }
                pos += static_cast<uint64_t>(got);
                copied += static_cast<uint64_t>(got);
            }
        }
    }
    if (::fsync(out) != 0)
        return Error::from_errno(fmt::format("memory file '{}': fsync", base));
    return copied;
}

} // namespace vessel::snapshot
