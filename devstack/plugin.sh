#!/bin/bash
# devstack plugin entry point for vifagent. devstack sources this file as
# "plugin.sh <mode> [<phase>]" once per phase; the functions are in
# devstack/lib/vifagent and the defaults in devstack/settings.

source "$(dirname "${BASH_SOURCE[0]}")/lib/vifagent"

if is_service_enabled vifagent; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing vifagent"
        install_vifagent
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring vifagent"
        configure_vifagent
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting vifagent"
        start_vifagent
    fi

    if [[ "$1" == "unstack" ]]; then
        stop_vifagent
    fi

    if [[ "$1" == "clean" ]]; then
        cleanup_vifagent
    fi
fi
