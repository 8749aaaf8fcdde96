// The pre-/post-boot checks with Firecracker's messages (apart from common.cpp, which the fuzz
// target links without the VMM).
#include "api/request/common.h"
#include "vmm/vmm.h"

namespace vessel::api {

Result<void> require_not_started(const Vmm& vmm)
{
    if (vmm.started())
        return make_error("{}", kNotAfterStart);
    return {};
}

Result<void> require_started(const Vmm& vmm)
{
    if (!vmm.started())
        return make_error("{}", kNotBeforeStart);
    return {};
}

} // namespace vessel::api
