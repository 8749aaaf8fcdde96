// `vessel uffd-handler --socket SOCK --mem-file FILE [--record TRACE [--record-seconds N]]
// [--prefetch TRACE] [--eager]`: the page-fault handler of the Uffd restore backend
// (snapshot/uffd_handler.h). It serves one VMM and exits with it, printing what it served.
#include <signal.h>

#include <atomic>
#include <cstdio>

#include "cli/verbs.h"
#include "snapshot/uffd_handler.h"

namespace vessel {

namespace {

std::atomic<snapshot::UffdHandler*> g_handler { nullptr };

void on_signal(int)
{
    if (auto* h = g_handler.load())
        h->stop();
}

} // namespace

int command_uffd_handler(const CliOptions& options)
{
    snapshot::UffdHandlerOptions o;
    o.mem_file = options.uffd.mem_file;
    o.record_path = options.uffd.record;
    o.record_seconds = options.uffd.record_seconds;
    o.prefetch_path = options.uffd.prefetch;
    o.eager = options.uffd.eager;
    auto handler = snapshot::UffdHandler::create(o);
    if (!handler.ok()) {
        std::fprintf(stderr, "vessel uffd-handler: error: %s\n", handler.error().message().c_str());
        return 1;
    }
    g_handler = handler->get();
    struct sigaction sa { };
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    std::string mode;
    if (!o.prefetch_path.empty())
        mode = fmt::format("prefetch ({} pages)", (*handler)->prefetch_pages());
    if (o.eager)
        mode += mode.empty() ? "eager" : " then eager";
    if (mode.empty())
        mode = "lazy";
    if (!o.record_path.empty())
        mode += ", recording";
    auto stats = (*handler)->listen_and_serve(options.uffd.socket, [&] {
        std::fprintf(stderr,
            "vessel uffd-handler: listening on %s for one VMM: memory file %s (%llu MiB, %llu MiB of data), %s\n",
            options.uffd.socket.c_str(), o.mem_file.c_str(),
            static_cast<unsigned long long>((*handler)->file_size() >> 20),
            static_cast<unsigned long long>((*handler)->data_bytes() >> 20), mode.c_str());
    });
    g_handler = nullptr;
    if (!stats.ok()) {
        std::fprintf(stderr, "vessel uffd-handler: error: %s\n", stats.error().message().c_str());
        return 1;
    }
    std::printf("vessel uffd-handler: %s\n", stats->summary().c_str());
    if (!o.record_path.empty())
        std::printf("vessel uffd-handler: trace of %llu pages written to %s\n",
            static_cast<unsigned long long>(stats->recorded_pages), o.record_path.c_str());
    std::fflush(stdout);
    return 0;
}

} // namespace vessel
