#include "devices/vmgenid.h"

#include <sys/random.h>

#include <cerrno>

namespace vessel {

namespace {

Result<VmGenId::Id> random_id()
{
    VmGenId::Id id {};
    size_t done = 0;
    while (done < id.size()) {
        // getrandom() fills up to 256 bytes at once from the initialized pool; loop for EINTR.
        ssize_t n = ::getrandom(id.data() + done, id.size() - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("getrandom for the VM generation ID");
        }
        done += static_cast<size_t>(n);
    }
    return id;
}

} // namespace

VmGenId::VmGenId(IrqLine irq, uint64_t address)
    : m_irq(std::move(irq))
    , m_address(address)
{
}

Result<void> VmGenId::write_new_id(GuestMemory& mem)
{
    Id id = TRY(random_id());
    // A repeat of 128 random bits is practically impossible, but the guest ignores an unchanged ID.
    while (id == m_id)
        id = TRY(random_id());
    TRY_CTX(mem.write(m_address, id), fmt::format("writing the VM generation ID at {:#x}", m_address));
    m_id = id;
    return {};
}

void VmGenId::notify() const
{
    m_irq.pulse();
}

} // namespace vessel
