/**
 * The text `ostp-client route <host:port> [--process NAME] [--udp]` prints:
 * which rule a flow matches and which outbound it would take, decided
 * without connecting and without counting a hit.
 * @module
 */

import { formatHostPort } from "../../shared/config/types.ts";
import type { FlowContext, RouteDecision } from "./flow.ts";
import type { Router } from "./rules.ts";

/** Decides `ctx` on `router` without recording a hit, and describes the answer. */
export function explainRoute(router: Router, ctx: FlowContext): {
  decision: RouteDecision;
  lines: string[];
} {
  const decision = router.decide(ctx, false);
  const lines: string[] = [];
  const extra = [ctx.network, `inbound ${ctx.inbound}`];
  if (ctx.process !== undefined) extra.push(`process ${ctx.process}`);
  lines.push(`${formatHostPort(ctx.target)} (${extra.join(", ")})`);
  lines.push(
    decision.rule < 0
      ? "  matches no rule: the default outbound"
      : `  matches ${router.label(decision.rule)} (rule ${
        decision.rule + 1
      } of ${router.rules.length})`,
  );
  lines.push(`  outbound: ${decision.outbound}`);
  if (decision.needsIp) {
    lines.push(
      router.resolve === "onDemand"
        ? "  an earlier IP rule could match once the name is resolved: the client resolves it and decides again"
        : '  an earlier IP rule could match if the name were resolved; with "resolve": "never" this answer stands',
    );
  }
  return { decision, lines };
}
