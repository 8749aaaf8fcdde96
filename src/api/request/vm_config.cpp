// GET /vm/config: every resource of the VM in Firecracker's FullVmConfiguration shape (its
// 1.10 key order). Resources Firecracker never reports (cpu-config, logger, metrics) are null.
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

HttpResponse get_vm_config(ApiContext& ctx)
{
    const Vmm& vmm = ctx.vmm;
    const VmConfig& c = vmm.running_config();
    nlohmann::ordered_json o;
    auto balloon = current_balloon(vmm);
    o["balloon"] = balloon ? balloon_json(*balloon) : nlohmann::ordered_json(nullptr);
    o["drives"] = nlohmann::ordered_json::array();
    for (auto& d : c.disks)
        o["drives"].push_back(drive_json(d));
    nlohmann::ordered_json boot;
    // The boot source as configured (before Vessel adds root=... for a root drive), so that the
    // answer fed back as a configuration gives the same VM.
    if (const auto& source = vmm.resources().boot_source()) {
        boot["kernel_image_path"] = source->kernel_image_path;
        boot["initrd_path"]
            = source->initrd_path ? nlohmann::ordered_json(*source->initrd_path) : nlohmann::ordered_json(nullptr);
        if (source->boot_args)
            boot["boot_args"] = *source->boot_args;
    } else {
        // `vessel run` (or nothing configured yet).
        boot["kernel_image_path"] = c.kernel;
        boot["initrd_path"] = c.initrd.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(c.initrd);
        if (!c.kernel.empty())
            boot["boot_args"] = c.cmdline;
    }
    o["boot-source"] = boot;
    o["cpu-config"] = nullptr;
    o["logger"] = nullptr;
    o["machine-config"] = machine_config_json(vmm);
    o["metrics"] = nullptr;
    if (c.mmds) {
        nlohmann::ordered_json m;
        m["version"] = c.mmds->version;
        m["network_interfaces"] = c.mmds->network_interfaces;
        m["ipv4_address"] = c.mmds->ipv4_address;
        m["imds_compat"] = c.mmds->imds_compat;
        o["mmds-config"] = m;
    } else {
        o["mmds-config"] = nullptr;
    }
    o["network-interfaces"] = nlohmann::ordered_json::array();
    for (auto& n : c.nets)
        o["network-interfaces"].push_back(net_json(n));
    if (c.vsock) {
        nlohmann::ordered_json v;
        v["guest_cid"] = c.vsock->cid;
        v["uds_path"] = c.vsock->socket;
        o["vsock"] = v;
    } else {
        o["vsock"] = nullptr;
    }
    if (c.rng) {
        nlohmann::ordered_json e;
        e["rate_limiter"] = rate_limiter_json(c.rng_rate_limiter);
        o["entropy"] = e;
    } else {
        o["entropy"] = nullptr;
    }
    return HttpResponse::json(200, o.dump());
}

} // namespace vessel::api
