// Port-I/O and MMIO buses. Devices register non-overlapping address ranges and only ever see
// offsets into their range. Ranges are registered while the VM is built; afterwards the bus is
// read-only and lookups need no lock (devices serialise their own state).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace vessel {

class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual std::string_view name() const = 0;
    // `data.size()` is the access width (1, 2, 4 or 8 for most accesses).
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class Bus {
public:
    explicit Bus(std::string name) : m_name(std::move(name)) { }

    // Registers [base, base+len). Refuses empty, wrapping or overlapping ranges.
    Result<void> insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len);

    // Dispatches an access. Returns false when no device claims `addr` (reads then see all ones).
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

    struct Entry {
        uint64_t base;
        uint64_t len;
        std::shared_ptr<BusDevice> device;
    };
    const std::vector<Entry>& entries() const { return m_entries; }
    // The entry containing addr, or nullptr.
    const Entry* find(uint64_t addr) const;

private:
    std::string m_name;
    std::vector<Entry> m_entries; // sorted by base
};

} // namespace vessel
