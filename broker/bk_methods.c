/*
 * bk_methods.c - THE method table: every method the broker serves, the
 * connection states in which it is allowed, the shape of its params
 * (checked by rp_conn with json_unpack before the handler runs) and its
 * handler. docs/METHODS.md is the contract; unknown members are ignored.
 *
 * The params spec is "{}" (params must be an object) for every method, and
 * each handler checks its own members: rp_conn validates specs with
 * json_unpack_ex(JSON_VALIDATE_ONLY) and no further arguments, but jansson
 * reads object keys from the varargs even in validate-only mode, so a spec
 * naming keys ("{s:s}") would read garbage. The members each method needs
 * are listed beside it.
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
    /* version:int, role:str, software?:str */
    {.name = "hello",
        .states = RP_ST_NEW,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_hello},
    {.name = "ping",
        .states = AGENT | HELPER,
        .params = "{}",
        .flags = RP_M_NOTIFY_OK,
        .handler = bk_h_ping},

    /* Helper: SASL, then the listing and the offers. */
    /* mechanism:str, initial?:str|null */
    {.name = "auth.start",
        .states = RP_ST_HELLO,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_auth_start},
    /* response:str */
    {.name = "auth.step",
        .states = RP_ST_AUTHING,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_auth_step},
    /* filter?:str */
    {.name = "machines.list",
        .states = HELPER,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_machines_list},
    /* machine:str, mode:str, addresses:[str] */
    {.name = "offer.create",
        .states = HELPER,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_offer_create},
    /* ticket:str */
    {.name = "offer.cancel",
        .states = HELPER,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_offer_cancel},
    /* ticket:str */
    {.name = "control.request",
        .states = HELPER,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_control_request},
    {.name = "ticket.list",
        .states = HELPER | AGENT,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_ticket_list},

    /* Agent (machine certificate). */
    /* fqdn:str, addresses?:[str], sessions?:[obj], software?:str */
    {.name = "agent.register",
        .states = AGENT,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_agent_register},
    /* sessions:[obj] */
    {.name = "agent.sessions",
        .states = AGENT,
        .params = "{}",
        .flags = RP_M_NOTIFY_OK,
        .handler = bk_h_agent_sessions},
    /* ticket:str, user?:str */
    {.name = "ticket.expire",
        .states = AGENT,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_ticket_expire},
    /* ticket:str, event:str, ... */
    {.name = "session.event",
        .states = AGENT,
        .params = "{}",
        .flags = RP_M_NOTIFY_OK,
        .handler = bk_h_session_event},

    /* Relay. */
    /* ticket:str, side:str */
    {.name = "relay.join",
        .states = AGENT | HELPER,
        .params = "{}",
        .flags = RP_M_REQUEST_ONLY,
        .handler = bk_h_relay_join},
};

const size_t bk_nmethods = sizeof(bk_methods) / sizeof(bk_methods[0]);
