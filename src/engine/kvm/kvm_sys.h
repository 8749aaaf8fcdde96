// C-layout headers for the KVM ioctls whose uapi structs end in a flexible array.
// Linux's uapi headers declare those arrays with __DECLARE_FLEX_ARRAY, which under C++ adds an
// empty struct member: sizeof() grows and so do the ioctl numbers derived from it (the kernel
// then answers EINVAL). These mirror the C layouts exactly; entries follow the header.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace vessel::kvm_sys {

struct CpuidHeader {
    uint32_t nent;
    uint32_t padding;
};
struct MsrsHeader {
    uint32_t nmsrs;
    uint32_t pad;
};
struct RoutingHeader {
    uint32_t nr;
    uint32_t flags;
};
// struct kvm_xsave without its trailing flexible `extra` array (the legacy 4 KiB area).
struct Xsave {
    uint32_t region[1024];
};
static_assert(sizeof(Xsave) == 4096);
static_assert(sizeof(CpuidHeader) == 8 && sizeof(MsrsHeader) == 8 && sizeof(RoutingHeader) == 8);

constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);
constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, CpuidHeader);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);
constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, RoutingHeader);

// A header followed by `n` entries, contiguous as the kernel expects.
template<typename Header, typename Entry>
class FlexBuffer {
public:
    explicit FlexBuffer(size_t n)
        : m_bytes(sizeof(Header) + n * sizeof(Entry))
    {
        uint32_t count = static_cast<uint32_t>(n);
        std::memcpy(m_bytes.data(), &count, sizeof(count));
    }
    void* data() { return m_bytes.data(); }
    uint32_t count() const
    {
        uint32_t count;
        std::memcpy(&count, m_bytes.data(), sizeof(count));
        return count;
    }
    // SAFETY: the buffer holds sizeof(Header) + n * sizeof(Entry) bytes; entries are trivially
    // copyable and the offset is a multiple of their alignment (8).
    Entry* entries() { return reinterpret_cast<Entry*>(m_bytes.data() + sizeof(Header)); }

private:
    std::vector<uint8_t> m_bytes;
};

} // namespace vessel::kvm_sys
