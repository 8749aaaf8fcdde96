// The signals that end a VM run (exit status 128 + N). They are kept blocked and taken through
// a signalfd by the event loop, so no handler ever runs on a vCPU thread.
#pragma once

#include <signal.h>

namespace vessel {

inline sigset_t termination_signals()
{
    sigset_t set;
    sigemptyset(&set);
    for (int sig : { SIGTERM, SIGINT, SIGHUP, SIGQUIT })
        sigaddset(&set, sig);
    return set;
}

} // namespace vessel
