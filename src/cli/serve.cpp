#include "cli/serve.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "api/api_server.h"
#include "api/config_file.h"
#include "api/router.h"
#include "base/file.h"
#include "cli/run_dir.h"
#include "mmds/data_store.h"
#include "mmds/token_authority.h"
#include "snapshot/format.h"
#include "vmm/console_mux.h"
#include "vmm/event_loop.h"
#include "vmm/metrics.h"
#include "vmm/signals.h"
#include "vmm/vmm.h"

namespace vessel {

namespace {

constexpr const char* kVersion = "0.1.0";
constexpr auto kMetricsPeriod = std::chrono::seconds(60);

// Tells a waiting parent (vessel run --detach) how start-up went: "ready" or "error: why".
class ReadyPipe {
public:
    explicit ReadyPipe(int fd)
        : m_fd(fd)
    {
    }
    ~ReadyPipe() { close(); }
    void report(const std::string& message)
    {
        if (m_fd < 0)
            return;
        std::string line = message + "\n";
        [[maybe_unused]] auto n = ::write(m_fd, line.data(), line.size());
        close();
    }

private:
    void close()
    {
        if (m_fd >= 0)
            ::close(m_fd);
        m_fd = -1;
    }
    int m_fd;
};

int fail(ReadyPipe& ready, const std::string& message)
{
    std::fprintf(stderr, "vessel: error: %s\n", message.c_str());
    ready.report("error: " + message);
    return 1;
}

std::string absolute(const std::string& path)
{
    std::error_code ec;
    auto abs = std::filesystem::absolute(path, ec);
    return ec ? path : abs.lexically_normal().string();
}

int serve_here(const ServeOptions& o, int ready_fd)
{
    ReadyPipe ready(ready_fd);
    // Termination signals are taken through a signalfd by the loop; every thread inherits the mask.
    sigset_t signals = termination_signals();
    ::pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    set_log_instance_id(o.id);

    auto loop_result = EventLoop::create();
    if (!loop_result.ok())
        return fail(ready, loop_result.error().message());
    EventLoop& loop = *loop_result.value();
    Metrics metrics;
    if (!o.metrics_path.empty()) {
        if (auto r = metrics.init_file(o.metrics_path); !r.ok())
            return fail(ready, fmt::format("--metrics-path: {}", r.error().message()));
    }
    if (!o.log_path.empty()) {
        LogFileOptions lo;
        lo.instance_id = o.id;
        lo.show_level = o.show_level;
        lo.show_origin = o.show_log_origin;
        if (auto r = configure_log_file(o.log_path, lo); !r.ok())
            return fail(ready, fmt::format("--log-path: {}", r.error().message()));
    }

    ConsoleMux console(loop, o.detach ? ConsoleMux::Stdio::Ignore : ConsoleMux::Stdio::Use);
    auto mmds_store = std::make_shared<mmds::DataStore>(o.mmds_size_limit ? o.mmds_size_limit : o.max_payload);
    auto mmds_tokens = std::make_shared<mmds::TokenAuthority>();
    Vmm vmm(loop, console, metrics, Vmm::Options { o.id, o.engine, mmds_store, mmds_tokens });
    int exit_status = 0;
    vmm.on_exit = [&](int status) {
        exit_status = status;
        loop.stop();
    };
    console.on_quit = [&] { vmm.kill(0, "the user quit (Ctrl-A x)"); };

    // The API socket, and its name in the run directory.
    std::string socket_path, registration;
    if (!o.no_api) {
        auto dir = run_directory();
        if (!dir.ok())
            return fail(ready, dir.error().message());
        std::string own = *dir + "/" + o.id + ".sock";
        socket_path = o.api_sock.empty() ? own : absolute(o.api_sock);
        if (socket_path != own) {
            struct stat st { };
            if (::lstat(own.c_str(), &st) == 0) {
                if (api::unix_socket_is_live(own))
                    return fail(ready, fmt::format("a VM with id '{}' is already running (API socket {})", o.id, own));
                ::unlink(own.c_str());
            }
            registration = own;
        }
    }
    api::ApiContext context { vmm, metrics, console, mmds_store.get(), socket_path, kVersion, {} };
    context.exit_after_reply
        = [&](int status) { loop.post([&vmm, status] { vmm.kill(status, "killed through the API"); }); };
    api::Router router(context);
    std::unique_ptr<api::ApiServer> server;
    if (!o.no_api) {
        api::HttpLimits limits;
        limits.max_body_bytes = o.max_payload;
        auto created = api::ApiServer::create(
            loop, socket_path, limits, [&router](const api::HttpRequest& r) { return router.handle(r); });
        if (!created.ok())
            return fail(ready, created.error().message());
        server = std::move(created.value());
        if (!registration.empty() && ::symlink(socket_path.c_str(), registration.c_str()) != 0)
            log_warn("cannot register {} as {}: {}", socket_path, registration, std::strerror(errno));
        log_info("API socket {} (VM id {})", socket_path, o.id);
    }
    metrics.record_startup(o.start_time_us, o.start_time_cpu_us, o.parent_cpu_time_us);
    if (!o.metadata.empty()) {
        auto bytes = read_file(o.metadata, 16 << 20);
        if (!bytes.ok())
            return fail(ready, fmt::format("--metadata: {}", bytes.error().message()));
        if (auto r
            = mmds_store->put_json(std::string_view(reinterpret_cast<const char*>(bytes->data()), bytes->size()));
            !r.ok())
            return fail(ready, fmt::format("--metadata {}: {}", o.metadata, r.error().message()));
    }

    int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return fail(ready, fmt::format("signalfd: {}", std::strerror(errno)));
    auto sig_token = loop.add_fd(sfd, EPOLLIN, [&](uint32_t) {
        signalfd_siginfo info {};
        if (::read(sfd, &info, sizeof(info)) == sizeof(info)) {
            metrics.signal_received(static_cast<int>(info.ssi_signo));
            vmm.note_signal(static_cast<int>(info.ssi_signo));
        }
    });
    if (!sig_token.ok())
        return fail(ready, sig_token.error().message());
    if (auto r = console.start(); !r.ok())
        return fail(ready, r.error().message());

    if (!o.config_file.empty()) {
        if (auto r = api::apply_config_file(router, o.config_file); !r.ok())
            return fail(ready, r.error().message());
        if (auto r = vmm.start(); !r.ok())
            return fail(ready, fmt::format("Could not Start MicroVM from one single json: {}", r.error().message()));
    } else if (o.run_config) {
        if (auto r = vmm.start_with(*o.run_config); !r.ok())
            return fail(ready, r.error().message());
    } else if (o.restore) {
        Vm::RestoreOptions restore;
        restore.state_path = (std::filesystem::path(o.restore->dir) / snapshot::kStateFileName).string();
        restore.mem_path = (std::filesystem::path(o.restore->dir) / snapshot::kMemFileName).string();
        if (!o.restore->uffd_socket.empty()) {
            restore.mem_path = o.restore->uffd_socket;
            restore.mem_backend = Vm::MemBackend::Uffd;
        }
        restore.track_dirty_pages = o.restore->track_dirty_pages;
        restore.net_overrides = o.restore->net_overrides;
        restore.vsock_uds_path = o.restore->vsock_uds_path;
        restore.engine = o.restore->engine;
        if (auto r = vmm.load_snapshot(restore, o.restore->resume); !r.ok())
            return fail(ready, r.error().message());
    }
    ready.report("ready " + socket_path);

    // Firecracker writes the metrics file every 60 s once the VM runs (and once at start).
    std::function<void()> periodic = [&] {
        if (vmm.started()) {
            if (auto r = metrics.flush(); !r.ok())
                log_warn("{}", r.error().message());
        }
        loop.add_timer(kMetricsPeriod, periodic);
    };
    loop.add_timer(kMetricsPeriod, periodic);

    if (auto r = loop.run(); !r.ok()) {
        std::fprintf(stderr, "vessel: error: %s\n", r.error().message().c_str());
        exit_status = 1;
    }
    if (vmm.started())
        (void)metrics.flush();
    if (server)
        server->close();
    if (!registration.empty())
        ::unlink(registration.c_str());
    loop.remove_fd(sig_token.value());
    ::close(sfd);
    return exit_status;
}

// vessel run --detach: the VMM goes on in a child process of its own session; this process
// waits until the child's API socket accepts (or it failed), reports, and exits.
int serve_detached(const ServeOptions& o)
{
    auto dir = run_directory();
    if (!dir.ok()) {
        std::fprintf(stderr, "vessel: error: %s\n", dir.error().message().c_str());
        return 1;
    }
    std::string log_file = *dir + "/" + o.id + ".log";
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) {
        std::fprintf(stderr, "vessel: error: pipe: %s\n", std::strerror(errno));
        return 1;
    }
    pid_t pid = ::fork();
    if (pid < 0) {
        std::fprintf(stderr, "vessel: error: fork: %s\n", std::strerror(errno));
        return 1;
    }
    if (pid == 0) {
        ::close(pipefd[0]);
        ::setsid();
        int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        int log_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (null_fd >= 0)
            ::dup2(null_fd, STDIN_FILENO);
        if (log_fd >= 0) {
            ::dup2(log_fd, STDOUT_FILENO);
            ::dup2(log_fd, STDERR_FILENO);
        }
        ::_exit(serve_here(o, pipefd[1]));
    }
    ::close(pipefd[1]);
    std::string message;
    char buf[512];
    for (;;) {
        ssize_t n = ::read(pipefd[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        message.append(buf, static_cast<size_t>(n));
    }
    ::close(pipefd[0]);
    if (message.rfind("ready", 0) == 0) {
        std::printf("%s\n", o.id.c_str());
        std::fflush(stdout);
        return 0;
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (message.rfind("error: ", 0) == 0)
        message = message.substr(7);
    while (!message.empty() && message.back() == '\n')
        message.pop_back();
    std::fprintf(stderr, "vessel: error: %s\n",
        message.empty() ? fmt::format("the VMM exited during start-up (see {})", log_file).c_str() : message.c_str());
    return 1;
}

} // namespace

int serve(ServeOptions options)
{
    if (options.id.empty())
        options.id = fmt::format("vm-{}", ::getpid());
    if (auto r = check_instance_id(options.id); !r.ok()) {
        std::fprintf(stderr, "vessel: error: %s\n", r.error().message().c_str());
        return 1;
    }
    if (options.no_api && options.config_file.empty() && !options.run_config && !options.restore) {
        std::fprintf(stderr, "vessel: error: --no-api needs --config-file (nothing could start the VM)\n");
        return 1;
    }
    if (options.detach)
        return serve_detached(options);
    return serve_here(options, -1);
}

} // namespace vessel
