#!/bin/bash
# shellcheck shell=bash
# devstack plugin for nova_stealth: installs it, makes nova-compute load
# StealthLibvirtDriver with the [stealth] options of devstack/settings,
# runs the chaff responder on compute nodes, removes all shaping and port
# leases at unstack (after stopping nova-compute) and its state at clean.
#
# Options go into $NOVA_CONF, not $NOVA_CPU_CONF: devstack's
# start_nova_compute (lib/nova) makes $NOVA_CPU_CONF by copying $NOVA_CONF
# after the post-config phase, then merges local.conf's
# [[post-config|$NOVA_CPU_CONF]] over it, so anything a plugin writes into
# $NOVA_CPU_CONF at post-config is lost, and an operator's local.conf still
# wins over ours.
#
# The functions used here (pip_install, iniset, run_process, stop_process,
# is_service_enabled, echo_summary) come from devstack.

function install_nova_stealth {
    # A wheel, not setup_develop: Nova loads the driver from the installed
    # nova/virt/stealth package, which an editable install does not make.
    pip_install "$NOVA_STEALTH_DIR"
}

function configure_nova_stealth {
    sudo install -d -o "$STACK_USER" "$NOVA_STEALTH_STATE_DIR"
    sudo install -m 644 \
        "$NOVA_STEALTH_DIR/etc/nova/rootwrap.d/nova-stealth.filters" \
        "$NOVA_CONF_DIR/rootwrap.d/nova-stealth.filters"
    iniset "$NOVA_CONF" DEFAULT compute_driver stealth.StealthLibvirtDriver
    # QEMU's own limiter must not pace the migration (0: unlimited).
    iniset "$NOVA_CONF" libvirt live_migration_bandwidth 0
    iniset "$NOVA_CONF" libvirt live_migration_tunnelled False
    iniset "$NOVA_CONF" stealth state_dir "$NOVA_STEALTH_STATE_DIR"
    iniset "$NOVA_CONF" stealth require_stealth "$NOVA_STEALTH_REQUIRE"
    iniset "$NOVA_CONF" stealth rate_policy "$NOVA_STEALTH_RATE_POLICY"
    if [[ -n "$NOVA_STEALTH_CHAFF_PORTS" ]]; then
        iniset "$NOVA_CONF" stealth chaff_ports "$NOVA_STEALTH_CHAFF_PORTS"
    fi
    iniset "$NOVA_CONF" stealth chaff_peer_networks \
        "$NOVA_STEALTH_PEER_NETWORKS"
    # Chaff is mutual TLS with QEMU's x509 credentials (README.rst, "TLS
    # for chaff and migrations"): without them there is no chaff.
    iniset "$NOVA_CONF" stealth chaff_tls_x509_dir "$NOVA_STEALTH_TLS_DIR"
}

function start_nova_stealth {
    # The responder reads the [stealth] options configure_nova_stealth
    # wrote, as nova-compute does.
    run_process n-stealth "$(command -v nova-stealth-chaff-responder) \
--config-file $NOVA_CONF"
}

function stop_nova_stealth {
    stop_process n-stealth
    # devstack's unstack.sh runs this phase before stop_nova: stop
    # nova-compute first (stop_nova does it again, harmlessly), so that
    # nothing the sweep removes is in use by a migration.
    if is_service_enabled n-cpu; then
        stop_process n-cpu
    fi
    # Read both files as nova-compute does: state_dir is in $NOVA_CONF,
    # which $NOVA_CPU_CONF (if stack.sh got that far) copies and overrides.
    local files=(--config-file "$NOVA_CONF")
    if [[ -f "$NOVA_CPU_CONF" ]]; then
        files+=(--config-file "$NOVA_CPU_CONF")
    fi
    sudo "$(command -v nova-stealth-cleanup)" "${files[@]}"
}

function clean_nova_stealth {
    sudo rm -rf "$NOVA_STEALTH_STATE_DIR"
    sudo rm -f "$NOVA_CONF_DIR/rootwrap.d/nova-stealth.filters"
}

if is_service_enabled n-stealth; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing nova_stealth"
        install_nova_stealth
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring nova_stealth"
        configure_nova_stealth
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        echo_summary "Starting the nova_stealth chaff responder"
        start_nova_stealth
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_nova_stealth
    fi
    if [[ "$1" == "clean" ]]; then
        # clean.sh has run unstack.sh (and so the sweep) already.
        clean_nova_stealth
    fi
fi
