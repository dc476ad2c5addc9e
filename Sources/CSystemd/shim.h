// The system libsystemd (Debian's libsystemd-dev, systemd 252): only the daemon API
// (sd_listen_fds_with_names, sd_notify, sd_watchdog_enabled), which needs no running systemd.
#ifndef PAGEBROKER_CSYSTEMD_SHIM_H
#define PAGEBROKER_CSYSTEMD_SHIM_H

#include <systemd/sd-daemon.h>

#endif
