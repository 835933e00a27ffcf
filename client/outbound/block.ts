/**
 * The "block" outbound: every flow is refused at once and nothing is sent
 * anywhere. The refusal is a {@link DialError} with reason `"denied"`, which
 * the SOCKS5 inbound answers with reply 0x02 ("connection not allowed by
 * ruleset") and the HTTP inbound with 403 Forbidden.
 * @module
 */

import { DialError, type Duplex } from "../../shared/duplex.ts";
import {
  type FlowContext,
  formatTarget,
  type Outbound,
  type UdpFlow,
  type UdpReplyHandler,
} from "./outbound.ts";

/** The failure reason a blocked flow gets. */
export const BLOCKED_REASON = "denied";

/** Refuses every TCP and UDP flow with DialError "denied". */
export class BlockOutbound implements Outbound {
  /** The outbound's name (default `"block"`). */
  readonly name: string;

  /** Creates the outbound; `name` is how rules and logs refer to it. */
  constructor(name = "block") {
    this.name = name;
  }

  /** Always rejects with DialError "denied". */
  dial(ctx: FlowContext, _signal?: AbortSignal): Promise<Duplex> {
    return Promise.reject(this.#refusal(ctx));
  }

  /** Always rejects with DialError "denied". */
  openUdp(ctx: FlowContext, _onReply: UdpReplyHandler): Promise<UdpFlow> {
    return Promise.reject(this.#refusal(ctx));
  }

  #refusal(ctx: FlowContext): DialError {
    return new DialError(
      BLOCKED_REASON,
      `${ctx.network} flow to ${formatTarget(ctx.target)} blocked (outbound "${this.name}")`,
    );
  }
}
