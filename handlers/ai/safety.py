"""The safety gate, before and after any engine: a consumer's words that mention a hazard get a
fixed safety answer (no engine is asked), and an engine's step that touches a hazardous part is
replaced by "a technician must do this". The patterns are data, one list per language; every
list is applied whatever the session's language (a Spanish sentence on an English session is
still a gas smell)."""

import re
from collections.abc import Callable

import msgspec

from handlers.errors import N_
from protocol.ai import AiAnswer, AiDraft, AiStep

Translate = Callable[[str], str]  # a message id -> its text in the conversation's language

# What a consumer may say that means: stop now (gas, fire, electricity near water, CO).
HAZARDS: dict[str, tuple[str, ...]] = {
    "en": (
        r"\b(smell|smells|smelling|odou?r|stink)s?\b[^.!?]{0,20}\b(gas|propane|rotten eggs?)\b",
        r"\bgas\s+(smell|odou?r|leak|leaking)", r"\bleaking\s+gas\b", r"\brotten eggs?\b",
        r"\bspark(s|ing|ed|ed)?\b", r"\bsmok(e|es|ing|y)\b",
        r"\bburn(ing|t|ed)\s+(smell|odou?r|plastic|rubber)", r"\b(smell|smells|odou?r)\s+(of\s+|like\s+)?burn",
        r"\bwater\b[^.!?]{0,40}\b(outlet|socket|plug|wires?|wiring|electric\w*|power\s+cord|breaker|panel)",
        r"\b(outlet|socket|plug|wires?|wiring|electric\w*|power\s+cord)\b[^.!?]{0,40}\b(wet|water|flooded)\b",
        r"\bcarbon\s+monoxide\b", r"\bco\s+(alarm|detector)\b",
        r"\b(exposed|bare|burnt|burned|melted|frayed)\s+(wires?|wiring|cables?|cords?|plugs?|outlets?)",
        r"\b(wires?|wiring)\s+(is\s+|are\s+)?(exposed|burnt|burned|melted|frayed)",
        r"\belectric(al)?\s+shocks?\b", r"\b(got|get|gave\s+me)\s+(a\s+)?shock\b", r"\bshocked\s+me\b",
        r"\b(on\s+fire|caught\s+fire|fire\s+(in|inside|from|coming))\b",
        r"\bflames?\s+(coming|shooting|came|out|outside|from|inside|under|behind)\b",
    ),
    "es": (
        r"\b(olor|huele|oler)\w*\s+a\s+(gas|huevo)", r"\bfuga\s+de\s+gas\b", r"\bescape\s+de\s+gas\b",
        r"\bchispa\w*", r"\bchispea\w*", r"\bhumo\b", r"\bhumea\w*",
        r"\b(olor|huele)\w*\s+a\s+quemado", r"\bquemad[oa]s?\b[^.!?]{0,20}\b(cable|enchufe|toma)",
        r"\bagua\b[^.!?]{0,40}\b(enchufe|toma\s+de\s+corriente|tomacorriente|cables?|el[eé]ctric\w*)",
        r"\b(enchufe|tomacorriente|cables?)\b[^.!?]{0,40}\b(mojad[oa]s?|agua)\b",
        r"\bmon[oó]xido\s+de\s+carbono\b", r"\b(alarma|detector)\s+de\s+co\b",
        r"\bcables?\s+(expuest|pelad|quemad|derretid|suelt)\w*", r"\bdescarga\s+el[eé]ctrica\b",
        r"\b(se\s+prendi[oó]\s+fuego|sali[oó]\s+fuego|sale\s+fuego|en\s+llamas|incendio)\b",
    ),
    "zh-Hans": (
        r"(煤气|燃气|天然气|液化气)(味|泄漏|漏了|漏气)", r"闻到.{0,6}(煤气|燃气|天然气|臭鸡蛋)", r"漏气",
        r"火花", r"冒烟", r"烟雾", r"(烧焦|焦糊|糊味|焦味|烧糊)",
        r"(水|漏水|进水).{0,10}(插座|插头|电线|电源|电路|电器)", r"(插座|插头|电线|电源).{0,10}(湿|进水|有水)",
        r"一氧化碳", r"(电线|线路).{0,4}(裸露|外露|烧|熔化|破损)", r"裸露的?电线", r"触电", r"漏电",
        r"(?<![点打])(?<!点不)(?<!打不)着火", r"起火", r"冒火",  # 点不着火: "will not light", not a fire
    ),
}

# What an engine's step must never ask of a consumer.
HAZARDOUS_STEPS: dict[str, tuple[str, ...]] = {
    "en": (
        r"\b(mains|live\s+wires?|wiring|rewire|terminal\s+block|wire\s+harness|junction\s+box)\b",
        r"\bgas\s+(line|pipe|valve|supply\s+line|connector|regulator|orifice)", r"\brefrigerant\b", r"\bfreon\b",
        r"\bsealed\s+system\b", r"\brecharg\w*", r"\bmicrowave\b[^.!?]{0,40}\b(case|cover|cabinet|housing|magnetron)",
        r"\bopen\w*\s+(up\s+)?the\s+(case|cabinet|housing)\b", r"\bcapacitors?\b", r"\bhigh[\s-]voltage\b",
        r"\b(control|circuit|main)\s+board\b", r"\bsolder\w*", r"\bbypass\w*\b[^.!?]{0,30}\b(fuse|switch|safety)",
    ),
    "es": (
        r"\b(cableado|red\s+el[eé]ctrica|cables?\s+con\s+corriente|bornera|caja\s+de\s+conexiones)\b",
        r"\b(tuber[ií]a|l[ií]nea|v[aá]lvula|manguera|regulador)\s+de(l)?\s+gas\b", r"\brefrigerante\b", r"\bfre[oó]n\b",
        r"\bsistema\s+sellado\b", r"\brecarg\w*", r"\bmicroondas\b[^.!?]{0,40}\b(carcasa|cubierta|magnetr[oó]n)",
        r"\babri\w*\s+la\s+carcasa\b", r"\bcapacitor(es)?\b",
        r"\bcondensador\s+(el[eé]ctrico|de\s+arranque|de\s+marcha)",
        r"\balt[oa]\s+(voltaje|tensi[oó]n)\b", r"\bplaca\s+(de\s+control|electr[oó]nica)\b", r"\bsold\w*",
        r"\bpuente\w*\b[^.!?]{0,30}\b(fusible|interruptor)",
    ),
    "zh-Hans": (
        r"(电线|线路|接线|市电|带电)", r"(燃气|煤气|天然气)(管|阀|接头|减压阀)", r"(制冷剂|冷媒|氟利昂|加氟)",
        r"密封系统", r"微波炉.{0,10}(外壳|机壳|磁控管)", r"(拆开|打开).{0,4}(外壳|机壳)", r"电容", r"高压",
        r"(控制板|主板|电路板)", r"焊", r"短接",
    ),
}

# The patterns are lower case and see the text lowered once: re.IGNORECASE would cost every pattern
# its literal prefix scan (about a third more time per line, and every streamed line passes here).
_HAZARDS = [re.compile(p) for patterns in HAZARDS.values() for p in patterns]
_HAZARDOUS_STEPS = [re.compile(p) for patterns in HAZARDOUS_STEPS.values() for p in patterns]

SAFETY_DIAGNOSIS = N_(
    "This may be dangerous. Stop using the appliance now. If it is safe to do so, switch off its power at the "
    "breaker and close the gas supply valve, then leave the area. If you smell gas, see smoke or fire, or a "
    "carbon-monoxide alarm sounds, leave at once and call the emergency services from outside. Do not try any "
    "repair yourself: a professional must look at it.")
SAFETY_REPORT_BACK = N_("Once you are safe, confirm the order draft below and a technician will come.")
TECHNICIAN_STEP = N_("A technician must do this step.")
TECHNICIAN_LOOK_FOR = N_("Do not try this yourself: leave it to the technician.")


def hazard_in(text: str) -> bool:
    """Whether a consumer's words mention a hazard that stops the conversation's self-help."""
    lowered = text.lower()
    return any(p.search(lowered) for p in _HAZARDS)


def hazardous_step(text: str) -> bool:
    lowered = text.lower()
    return any(p.search(lowered) for p in _HAZARDOUS_STEPS)


def safety_answer(translate: Translate, summary: str, service_type: str) -> AiAnswer:
    """The fixed answer to a hazard: no self-repair step, a technician with urgency `emergency`."""
    return AiAnswer(
        diagnosis=translate(SAFETY_DIAGNOSIS), steps=[], report_back=translate(SAFETY_REPORT_BACK),
        verdict="technician_needed",
        draft=AiDraft(service_type=service_type, summary=summary, tried=[], likely_parts=[], urgency="emergency"))


def technician_step(translate: Translate) -> AiStep:
    return AiStep(instruction=translate(TECHNICIAN_STEP), look_for=translate(TECHNICIAN_LOOK_FOR),
                  technician_only=True)


def gate_answer(answer: AiAnswer, translate: Translate) -> tuple[AiAnswer, bool]:
    """The answer with every hazardous step replaced by "a technician must do this", and a
    diagnosis or report-back that tells of hazardous work replaced by that too; True when one was."""
    steps, gated = [], False
    for step in answer.steps:  # a step the engine marked technician-only keeps its words (it is not offered)
        if hazardous_step(f"{step.instruction} {step.look_for}"):
            steps.append(technician_step(translate))
            gated = True
        else:
            steps.append(step)
    texts = {}
    for field in ("diagnosis", "report_back"):
        text = getattr(answer, field)
        if hazardous_step(text) and text not in (translate(SAFETY_DIAGNOSIS), translate(SAFETY_REPORT_BACK)):
            texts[field] = translate(TECHNICIAN_STEP if field == "diagnosis" else TECHNICIAN_LOOK_FOR)
            gated = True
    return (msgspec.structs.replace(answer, steps=steps, **texts) if gated else answer), gated


STEP_LINE = re.compile(r"^(\d+)\. ")


def gate_line(line: str, translate: Translate) -> str:
    """A line of an answer's streamed text (engine.render), replaced alike when it tells of hazardous
    work: a numbered step by the technician's step, any other line (the diagnosis, what to report
    back) by its sentence. Every line is checked, numbered or not."""
    if not hazardous_step(line) or line in (translate(SAFETY_DIAGNOSIS), translate(SAFETY_REPORT_BACK)):
        return line  # the fixed safety answer names the breaker and the gas valve on purpose
    numbered = STEP_LINE.match(line)
    step = technician_step(translate)
    if numbered is None:
        return step.instruction
    return f"{numbered.group(1)}. {step.instruction} — {step.look_for}"
