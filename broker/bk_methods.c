/*
 * bk_methods.c - THE method table: every method the broker serves, the
 * connection states in which it is allowed, the shape of its params
 * (checked by rp_conn with json_unpack before the handler runs) and its
 * handler. docs/PROTOCOL.md (Methods) is the contract; unknown members are
 * ignored.
 *
 * The params spec (rp_conn's inline-key json_unpack format, checked before
 * the handler runs) names the required members and the optional ones
 * whose type is simple; lists and objects (addresses, sessions) and the
 * "string or null" of auth.start's initial are checked by the handlers,
 * which also re-check what they use. rp_methods_check validates this table
 * at start-up (rabrokerd, -n) and in test_bk_methods.
 */
#include <stddef.h>

#include "bk_methods.h"
#include "bk_offer.h"
#include "bk_relay.h"
#include "rp_conn.h"

#define AGENT RP_ST_AGENT
#define HELPER RP_ST_HELPER

const struct rp_method bk_methods[] = {
    /* Any role. */
    {.name = "hello",
        .states = RP_ST_NEW,
        .params = "{version:I, role:s, software?:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_hello},
    {.name = "ping",
        .states = AGENT | HELPER,
        .params = "{}",
        .flags = RP_M_NOTIFY_OK,
        .handler = bk_h_ping},

    /* Helper: SASL, then the listing and the offers. */
    /* initial?: base64 str, or null = no initial response */
    {.name = "auth.start",
        .states = RP_ST_HELLO,
        .params = "{mechanism:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_auth_start},
    {.name = "auth.step",
        .states = RP_ST_AUTHING,
        .params = "{response:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_auth_step},
    {.name = "machines.list",
        .states = HELPER,
        .params = "{filter?:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_machines_list},
    /* addresses: [str], 1 to 16 (the handler says which is wrong) */
    {.name = "offer.create",
        .states = HELPER,
        .params = "{machine:s, mode:s, addresses:o}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_offer_create},
    {.name = "offer.cancel",
        .states = HELPER,
        .params = "{ticket:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_offer_cancel},
    {.name = "control.request",
        .states = HELPER,
        .params = "{ticket:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_control_request},
    {.name = "ticket.list",
        .states = HELPER | AGENT,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_ticket_list},

    /* Agent (machine certificate). */
    /* addresses: [str], sessions: [{id, user, kind, locked?}],
     * tickets: [ticket id] the agent still holds */
    {.name = "agent.register",
        .states = AGENT,
        .params = "{fqdn:s, addresses?:o, sessions?:o, tickets?:o, "
                  "software?:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_agent_register},
    {.name = "agent.sessions",
        .states = AGENT,
        .params = "{sessions:o}",
        .flags = RP_M_NOTIFY_OK,
        .handler = bk_h_agent_sessions},
    {.name = "ticket.expire",
        .states = AGENT,
        .params = "{ticket:s, user?:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_ticket_expire},
    {.name = "session.event",
        .states = AGENT,
        .params = "{ticket:s, event:s}",
        .flags = RP_M_NOTIFY_OK,
        .handler = bk_h_session_event},

    /* Relay. */
    {.name = "relay.join",
        .states = AGENT | HELPER,
        .params = "{ticket:s, side:s}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_relay_join},
};

const size_t bk_nmethods = sizeof(bk_methods) / sizeof(bk_methods[0]);
