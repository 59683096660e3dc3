// Checks on the shape of a journey's step graph: where each step can lead, whether every step
// can be reached, and whether a customer could go round a loop without ever waiting.

/** What the graph checks need to know about a step. */
export interface GraphStep {
  id: string;
  isWait: boolean;
  /** Ends the enrollment: no fall-through to the next step. */
  ends: boolean;
  /** Explicit jumps (branch cases and otherwise). */
  gotos: string[];
  /** A branch with no `otherwise` falls through to the next step when no case matches. */
  fallsThrough: boolean;
}

export type GraphProblem =
  { kind: "unreachable"; step: number } | { kind: "loop_without_wait"; steps: number[] };

/** Indexes of the steps each step can lead to (unknown goto targets are left out). */
export function successors(steps: GraphStep[]): number[][] {
  const index = new Map(steps.map((s, i) => [s.id, i]));
  return steps.map((step, i) => {
    if (step.ends) return [];
    const next = step.gotos.flatMap((id) => (index.has(id) ? [index.get(id)!] : []));
    if (step.fallsThrough && i + 1 < steps.length) next.push(i + 1);
    return [...new Set(next)];
  });
}

export function checkGraph(steps: GraphStep[]): GraphProblem[] {
  const next = successors(steps);
  const problems: GraphProblem[] = [];

  const reached = new Set<number>();
  const stack = steps.length > 0 ? [0] : [];
  while (stack.length > 0) {
    const i = stack.pop()!;
    if (reached.has(i)) continue;
    reached.add(i);
    stack.push(...next[i]!);
  }
  for (let i = 0; i < steps.length; i++) {
    if (!reached.has(i)) problems.push({ kind: "unreachable", step: i });
  }

  // A loop is only safe if every way round it waits: drop the wait steps and look for cycles.
  const withoutWaits = next.map((targets, i) =>
    steps[i]!.isWait ? [] : targets.filter((t) => !steps[t]!.isWait),
  );
  for (const component of stronglyConnected(withoutWaits)) {
    const only = component[0]!;
    const isCycle = component.length > 1 || withoutWaits[only]!.includes(only);
    if (isCycle && component.some((i) => reached.has(i))) {
      problems.push({ kind: "loop_without_wait", steps: component.sort((a, b) => a - b) });
    }
  }
  return problems;
}

/** Tarjan's algorithm, iterative so a long journey cannot overflow the stack. */
function stronglyConnected(next: number[][]): number[][] {
  const index: number[] = new Array<number>(next.length).fill(-1);
  const low: number[] = new Array<number>(next.length).fill(0);
  const onStack = new Set<number>();
  const stack: number[] = [];
  const components: number[][] = [];
  let counter = 0;

  for (let root = 0; root < next.length; root++) {
    if (index[root] !== -1) continue;
    const work: { node: number; edge: number }[] = [{ node: root, edge: 0 }];
    index[root] = low[root] = counter++;
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const frame = work.at(-1)!;
      const targets = next[frame.node]!;
      if (frame.edge < targets.length) {
        const t = targets[frame.edge++]!;
        if (index[t] === -1) {
          index[t] = low[t] = counter++;
          stack.push(t);
          onStack.add(t);
          work.push({ node: t, edge: 0 });
        } else if (onStack.has(t)) {
          low[frame.node] = Math.min(low[frame.node]!, index[t]!);
        }
        continue;
      }
      work.pop();
      const parent = work.at(-1);
      if (parent) low[parent.node] = Math.min(low[parent.node]!, low[frame.node]!);
      if (low[frame.node] === index[frame.node]) {
        const component: number[] = [];
        let member: number;
        do {
          member = stack.pop()!;
          onStack.delete(member);
          component.push(member);
        } while (member !== frame.node);
        components.push(component);
      }
    }
  }
  return components;
}
