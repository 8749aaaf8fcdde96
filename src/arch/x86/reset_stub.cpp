#include "arch/x86/reset_stub.h"

#include <span>

#include "arch/x86/layout.h"

namespace vessel {

namespace {

static_assert(layout::kResetVector + kResetStubCode.size() <= layout::kBiosEnd);
static_assert(layout::kResetStubPage <= layout::kResetVector);
static_assert(layout::kAcpiEnd <= layout::kResetStubPage);

} // namespace

Result<void> write_reset_stub(GuestMemory& mem)
{
    TRY_CTX(mem.write(layout::kResetVector, std::span<const uint8_t>(kResetStubCode)), "writing the reset vector stub");
    return {};
}

} // namespace vessel
