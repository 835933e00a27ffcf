/**
 * The wire layer of the userspace TCP/IP stack: packet formats only, no interfaces, no
 * sockets (smoltcp's `wire/` split). Import from here or from the one file you need.
 *
 * Failure convention (`error.ts`): parsers never throw and return a view or a
 * {@link WireError}; emitters write into caller buffers and throw `RangeError` only for
 * programmer errors. Views are reusable (`out` parameters) so a hot loop allocates nothing
 * but `subarray` views.
 * @module
 */

export * from "./error.ts";
export * from "./ip_protocol.ts";
export * from "./checksum.ts";
export * from "./address.ts";
export * from "./ipv4.ts";
export * from "./ipv6.ts";
export * from "./packet.ts";
export * from "./tcp.ts";
export * from "./udp.ts";
export * from "./icmp.ts";
