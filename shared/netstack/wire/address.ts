/**
 * Address classes the stack needs to decide what it may answer (RFC 1122 §3.2.2,
 * RFC 4443 §2.4, RFC 6890). Addresses are 4- or 16-byte arrays (views are fine).
 * @module
 */

/** True for 4-byte multicast (224/4), limited broadcast (255.255.255.255) or class E (240/4). */
export function isIpv4MulticastOrBroadcast(a: Uint8Array): boolean {
  return a[0] >= 224;
}

/** True for 0.0.0.0/8 ("this network"; 0.0.0.0 is the unspecified source). */
export function isIpv4ThisNetwork(a: Uint8Array): boolean {
  return a[0] === 0;
}

/** True for an IPv6 multicast address (ff00::/8). */
export function isIpv6Multicast(a: Uint8Array): boolean {
  return a[0] === 0xff;
}

/** True for the IPv6 unspecified address (::). */
export function isIpv6Unspecified(a: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== 0) return false;
  return true;
}

/**
 * True when `a` names one host: not unspecified/this-network, not multicast, not broadcast
 * (IPv4 class E included). A subnet's directed broadcast cannot be told from the address
 * alone: the stack that knows its prefixes must check that itself.
 */
export function isUnicast(a: Uint8Array): boolean {
  if (a.length === 4) return !isIpv4MulticastOrBroadcast(a) && !isIpv4ThisNetwork(a);
  if (a.length === 16) return !isIpv6Multicast(a) && !isIpv6Unspecified(a);
  return false;
}

/** True when two addresses have the same length and bytes. */
export function addressEquals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
