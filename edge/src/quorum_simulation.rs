//! Several vantage points on a fake clock (`core::vantage`): this edge
//! (region `weur`) and two remote probers (`enam`, `apac`), each with its
//! own schedule, clock and view of the target, their batches taken as
//! `POST /ops/observations` takes them. Also the figure in BENCHMARKS.md:
//! false incidents under random per-prober failures, quorum 1 against 2.
//! And the Worker's way (`Coordinator`): region objects asked by a
//! coordinator that is no vantage point and reads its state back from the
//! store every cycle.

use crate::config::Config;
use crate::core::history::History;
use crate::core::incident::RemediationStatus;
use crate::core::probe::{Health, Observation};
use crate::core::state::{Event, State};
use crate::core::vantage::{Batch, BatchError, ProberSchedule};

fn config(quorum: u32) -> Config {
    let text = format!(
        r#"
interval_s = 60
retry_after_s = 15
region = "weur"
[[target]]
id = "api"
url = "http://127.0.0.1:1/healthz"
role = "remediate"
host = "vps1"
actions = ["restart_api_core"]
regions = ["weur", "enam", "apac"]
quorum = {quorum}
[[host]]
id = "vps1"
url_env = "OPS_AGENT_URL"
token_env = "OPS_AGENT_TOKEN"
"#
    );
    Config::parse("sim.toml", &text).unwrap()
}

/// A remote prober: its own configuration (its region), schedule and
/// clock.
struct Prober {
    config: Config,
    schedule: ProberSchedule,
    /// Its clock minus the edge's.
    skew_ms: i64,
    seq: u64,
    /// Stopped reporting (its process or its network is gone).
    silent: bool,
    refused: Vec<BatchError>,
}

/// What one vantage point gets from the target.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fine,
    /// Cut off from the target (the network near this vantage point).
    CutOff,
    /// Fails each probe with this probability.
    Flaky(f64),
}

struct Sim {
    config: Config,
    state: State,
    history: History,
    now: u64,
    probers: Vec<Prober>,
    /// weur, enam, apac.
    paths: [Path; 3],
    rng: u64,
    delivered: Vec<String>,
    events: Vec<Event>,
}

const REGIONS: [&str; 3] = ["weur", "enam", "apac"];

impl Sim {
    fn new(quorum: u32) -> Self {
        let config = config(quorum);
        let now = 1_700_000_000_000;
        let probers = ["enam", "apac"]
            .into_iter()
            .map(|r| {
                let mut config = config.clone();
                config.region = r.into();
                Prober {
                    schedule: ProberSchedule::new(&config, now),
                    config,
                    skew_ms: 0,
                    seq: 0,
                    silent: false,
                    refused: Vec::new(),
                }
            })
            .collect();
        Sim {
            config,
            state: State::default(),
            history: History::default(),
            now,
            probers,
            paths: [Path::Fine; 3],
            rng: 0x9e37_79b9_7f4a_7c15,
            delivered: Vec::new(),
            events: Vec::new(),
        }
    }

    /// xorshift64*: the same run every time.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn probe(&mut self, region: usize, at_ms: u64) -> Observation {
        let ok = match self.paths[region] {
            Path::Fine => true,
            Path::CutOff => false,
            Path::Flaky(p) => self.random() >= p,
        };
        Observation {
            target: "api".into(),
            at_ms,
            health: if ok { Health::Healthy } else { Health::Down },
            status: ok.then_some(200),
            latency_ms: 20,
            error: (!ok).then(|| format!("connection refused (from {})", REGIONS[region])),
            cert: None,
        }
    }

    fn prober_now(&self, i: usize) -> u64 {
        self.now.saturating_add_signed(self.probers[i].skew_ms)
    }

    /// One wake-up: this edge's due probes, each prober's due probes sent
    /// as one batch, then the periodic checks and the outbox.
    fn step(&mut self) {
        let now = self.now;
        for id in self.state.due_targets(&self.config, now) {
            assert_eq!(id, "api");
            let obs = self.probe(0, now);
            let ev = self
                .state
                .observe_and_record(&self.config, &mut self.history, &obs, now);
            self.events.extend(ev);
        }
        for i in 0..self.probers.len() {
            let at = self.prober_now(i);
            let due = self.probers[i].schedule.due(at);
            if due.is_empty() || self.probers[i].silent {
                continue;
            }
            let observations: Vec<Observation> =
                due.iter().map(|_| self.probe(i + 1, at)).collect();
            let p = &mut self.probers[i];
            for obs in &observations {
                p.schedule.observe(&p.config, obs, at);
            }
            p.seq += 1;
            let batch = Batch {
                region: p.config.region.clone(),
                seq: p.seq,
                sent_at_ms: at,
                observations,
            };
            match self.state.take_batch(&self.config, &batch, now) {
                Ok((_, ev)) => self.events.extend(ev),
                Err(e) => self.probers[i].refused.push(e),
            }
        }
        let ev = self.state.tick(&self.config, &self.history, None, now);
        self.events.extend(ev);
        while let Some(entry) = self.state.outbox.due(now, 1000) {
            self.delivered.push(entry.headline());
            self.state
                .outbox
                .record(entry.id, crate::core::alert::Delivery::Sent, now);
        }
    }

    /// Steps until `ms` from now, waking when this edge or a prober asks.
    fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            self.step();
            let probers = (0..self.probers.len()).filter_map(|i| {
                let at = self.probers[i].schedule.next_at_ms()?;
                Some(at.saturating_add_signed(-self.probers[i].skew_ms))
            });
            // A wake-up at least every 5 s for the periodic checks.
            let next = probers
                .chain(self.state.next_probe_at_ms())
                .chain([self.now + 5_000])
                .min()
                .unwrap_or(end)
                .max(self.now + 1);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
        }
    }

    fn incidents(&self) -> usize {
        self.state.incidents.len()
    }

    fn notes(&self, kind: &str) -> Vec<&crate::core::vantage::Note> {
        self.state
            .vantage_notes
            .iter()
            .filter(|n| n.kind == kind)
            .collect()
    }
}

const MIN: u64 = 60_000;

/// What each vantage point saw at a transition: (region, health).
fn seen_from(change: &crate::core::incident::StateChange) -> Vec<(&str, Option<Health>)> {
    change
        .vantages
        .iter()
        .map(|s| (s.region.as_str(), s.health))
        .collect()
}

#[test]
fn quorum_reached_opens_the_incident_and_remediation_with_who_saw_what() {
    let mut sim = Sim::new(2);
    sim.run_for(5 * MIN);
    assert_eq!(sim.incidents(), 0);
    sim.paths[1] = Path::CutOff;
    sim.paths[2] = Path::CutOff;
    sim.run_for(3 * MIN);
    assert_eq!(sim.incidents(), 1, "{:?}", sim.events);
    let inc = &sim.state.incidents[0];
    assert_eq!(inc.remediation, RemediationStatus::Pending);
    assert_eq!(
        sim.state.remediation_due(&sim.config, sim.now),
        std::slice::from_ref(&inc.id),
        "remediation starts as with one vantage point"
    );
    let change = &inc.history[0];
    assert_eq!(change.to, Health::Down);
    assert_eq!(
        seen_from(change),
        [
            ("weur", Some(Health::Healthy)),
            ("enam", Some(Health::Down)),
            ("apac", Some(Health::Down)),
        ]
    );
    assert!(change.vantages[1]
        .error
        .as_deref()
        .unwrap()
        .contains("from enam"));
    assert_eq!(sim.delivered, ["api: healthy → down"]);
    assert!(
        sim.notes("seen_down_partly").is_empty(),
        "the moments in which the second vantage point confirms are no partial outage"
    );
    // Back from enough vantage points that no quorum can be bad: resolved.
    sim.paths[2] = Path::Fine;
    sim.run_for(2 * MIN);
    assert!(sim.state.incidents[0].resolved_at_ms.is_some());
}

#[test]
fn quorum_not_reached_is_one_note_and_one_warning_never_an_incident() {
    let mut sim = Sim::new(2);
    sim.run_for(2 * MIN);
    sim.paths[1] = Path::CutOff;
    sim.run_for(30 * MIN);
    assert_eq!(sim.incidents(), 0, "{:?}", sim.events);
    let notes = sim.notes("seen_down_partly");
    assert_eq!(notes.len(), 1, "one note per episode");
    assert_eq!(notes[0].regions, ["enam"]);
    assert!(
        notes[0]
            .text
            .contains("api seen down from enam only (1 of 3 vantage points, quorum 2)"),
        "{}",
        notes[0].text
    );
    assert!(
        notes[0]
            .text
            .contains("weur: healthy; enam: down (connection refused (from enam)); apac: healthy"),
        "{}",
        notes[0].text
    );
    assert_eq!(sim.delivered, ["api: seen down from enam only"]);
    assert!(sim.state.remediation_due(&sim.config, sim.now).is_empty());
    sim.paths[1] = Path::Fine;
    sim.run_for(3 * MIN);
    assert_eq!(sim.notes("seen_healthy_again").len(), 1);
    assert_eq!(
        sim.delivered.len(),
        1,
        "the end of the episode is noted, not alerted"
    );

    // With quorum_warning off, the note alone.
    let mut quiet = Sim::new(2);
    quiet.config.quorum_warning = false;
    quiet.paths[2] = Path::CutOff;
    quiet.run_for(10 * MIN);
    assert_eq!(quiet.notes("seen_down_partly").len(), 1);
    assert!(quiet.delivered.is_empty(), "{:?}", quiet.delivered);
}

#[test]
fn a_silent_prober_is_alerted_and_its_stale_view_never_makes_an_outage() {
    let mut sim = Sim::new(2);
    sim.run_for(2 * MIN);
    // apac sees the target down, then stops reporting.
    sim.paths[2] = Path::CutOff;
    sim.run_for(MIN);
    sim.probers[1].silent = true;
    sim.run_for(10 * MIN);
    let silent = sim.notes("prober_silent");
    assert_eq!(silent.len(), 1, "once per silence");
    assert_eq!(silent[0].regions, ["apac"]);
    assert_eq!(
        sim.events
            .iter()
            .filter(|e| matches!(e, Event::ProberSilent { .. }))
            .count(),
        1
    );
    // Now enam sees it down too: apac's stale view does not count.
    sim.paths[1] = Path::CutOff;
    sim.run_for(10 * MIN);
    assert_eq!(sim.incidents(), 0, "{:?}", sim.events);
    assert!(
        sim.delivered
            .iter()
            .any(|d| d.starts_with("prober apac silent")),
        "{:?}",
        sim.delivered
    );
    // apac reports again, still cut off: the quorum is there.
    sim.probers[1].silent = false;
    sim.run_for(3 * MIN);
    assert_eq!(sim.notes("prober_back").len(), 1);
    assert_eq!(sim.incidents(), 1, "{:?}", sim.events);

    // An incident stays open while a prober is silent: its stale view is
    // no recovery either.
    let mut sim = Sim::new(2);
    sim.paths = [Path::Fine, Path::CutOff, Path::CutOff];
    sim.run_for(3 * MIN);
    assert_eq!(sim.incidents(), 1);
    sim.probers[0].silent = true;
    sim.run_for(10 * MIN);
    assert!(
        sim.state.incidents[0].is_open(),
        "two of three would still be needed healthy"
    );
}

#[test]
fn skewed_clocks_within_the_bound_count_and_beyond_it_are_refused_then_silent() {
    let mut sim = Sim::new(2);
    sim.probers[0].skew_ms = 40_000;
    sim.probers[1].skew_ms = -35_000;
    sim.run_for(3 * MIN);
    assert!(sim.probers.iter().all(|p| p.refused.is_empty()));
    sim.paths[1] = Path::CutOff;
    sim.paths[2] = Path::CutOff;
    sim.run_for(3 * MIN);
    assert_eq!(sim.incidents(), 1, "{:?}", sim.events);

    let mut sim = Sim::new(2);
    sim.probers[1].skew_ms = 2 * MIN as i64;
    sim.paths[2] = Path::CutOff;
    sim.paths[1] = Path::CutOff;
    sim.run_for(10 * MIN);
    let refused = &sim.probers[1].refused;
    assert!(!refused.is_empty());
    assert!(
        refused[0]
            .to_string()
            .starts_with("sent_at_ms: the prober's clock is 120 s off"),
        "{}",
        refused[0]
    );
    assert_eq!(sim.incidents(), 0, "a refused prober makes no outage");
    assert_eq!(
        sim.notes("prober_silent").len(),
        1,
        "it is alerted as silent"
    );
}

#[test]
fn a_replayed_or_foreign_batch_changes_nothing() {
    let mut sim = Sim::new(2);
    sim.run_for(MIN);
    let obs = sim.probe(1, sim.now);
    let batch = Batch {
        region: "enam".into(),
        seq: 10,
        sent_at_ms: sim.now,
        observations: vec![obs],
    };
    sim.state.take_batch(&sim.config, &batch, sim.now).unwrap();
    let before = sim.state.clone();
    let e = sim
        .state
        .take_batch(&sim.config, &batch, sim.now)
        .unwrap_err();
    assert_eq!(e, BatchError::Replayed { seq: 10, last: 10 });
    for (bad, field) in [
        (
            Batch {
                region: "weur".into(),
                seq: 11,
                ..batch.clone()
            },
            "region: \"weur\" is this edge's own",
        ),
        (
            Batch {
                region: "mars".into(),
                seq: 11,
                ..batch.clone()
            },
            "region: no target lists \"mars\"",
        ),
    ] {
        let e = sim
            .state
            .take_batch(&sim.config, &bad, sim.now)
            .unwrap_err();
        assert!(e.to_string().starts_with(field), "{e}");
    }
    let mut foreign = batch.clone();
    foreign.seq = 11;
    foreign.observations[0].target = "www".into();
    let e = sim
        .state
        .take_batch(&sim.config, &foreign, sim.now)
        .unwrap_err();
    assert!(e.to_string().starts_with("observations[0].target"), "{e}");
    assert_eq!(sim.state, before);
    // The same observation again under a new number: ignored, not counted twice.
    let again = Batch { seq: 12, ..batch };
    let (outcome, _) = sim.state.take_batch(&sim.config, &again, sim.now).unwrap();
    assert_eq!((outcome.taken, outcome.ignored), (0, 1));
}

#[test]
fn a_host_signal_probes_only_where_this_edge_is_a_vantage_point() {
    use crate::core::signal::HostSignal;
    let mut sim = Sim::new(2);
    sim.config.targets[0].services = vec!["api-core".into()];
    let sig = HostSignal {
        host: "vps1".into(),
        service: "api-core".into(),
        event: "die".into(),
        at_ms: sim.now,
    };
    sim.run_for(MIN);
    assert_eq!(
        sim.state.signal(&sim.config, &sig, sim.now).probing,
        ["api"]
    );
    // Decided by its probers alone: this edge does not probe it.
    sim.config.targets[0].regions = vec!["enam".into(), "apac".into()];
    sim.now += 20_000;
    let outcome = sim.state.signal(&sim.config, &sig, sim.now);
    assert!(
        outcome.probing.is_empty() && outcome.throttled.is_empty(),
        "{outcome:?}"
    );
}

/// BENCHMARKS.md: `cargo test -p edge --lib quorum_false_incidents -- --ignored --nocapture`.
/// A healthy target, three vantage points each failing probes at random
/// (independently) at a given rate, 30 simulated days at interval 60 s:
/// the incidents opened (all of them false) with quorum 1 and quorum 2.
#[test]
#[ignore]
fn quorum_false_incidents() {
    println!("| per-probe failure rate | quorum 1 (any vantage point) | quorum 2 of 3 | quorum 2: minority notes |");
    println!("|---|---|---|---|");
    for rate in [0.01, 0.05, 0.10, 0.20] {
        // Incidents opened (not kept: resolved ones are kept up to 200),
        // and minority episodes noted.
        let run = |quorum| {
            let mut sim = Sim::new(quorum);
            sim.paths = [Path::Flaky(rate); 3];
            sim.run_for(30 * 24 * 60 * MIN);
            let noted = sim
                .events
                .iter()
                .filter(|e| matches!(e, Event::SeenDownPartly { .. }))
                .count();
            (sim.state.next_incident, noted)
        };
        let ((one, _), (two, notes)) = (run(1), run(2));
        println!("| {:.0} % | {one} | {two} | {notes} |", rate * 100.0);
    }
}

/// The Worker's way (`worker::shards`, `worker::store`): a coordinator
/// (region `main`, no vantage point) asks each region object once a cycle
/// (the cron's minute), then the confirm probes of the views still
/// confirming (`State::view_confirms`) within the interval; it reads its
/// state back from the stored JSON every cycle, carrying what the isolate
/// heard (`State::carry_heard`) unless `evicted`.
struct Coordinator {
    config: Config,
    stored: String,
    heard: Option<State>,
    now: u64,
    /// weur, enam, apac: the path from each region object to the target.
    paths: [Path; 3],
    /// Region objects that do not answer the coordinator.
    mute: [bool; 3],
    /// Every cycle starts in a fresh isolate (nothing carried).
    evicted: bool,
    /// Writes of the state (cycles whose state changed).
    writes: usize,
    probes: usize,
}

impl Coordinator {
    fn new() -> Self {
        let mut config = config(2);
        config.region = "main".into();
        Coordinator {
            config,
            stored: serde_json::to_string(&State::default()).unwrap(),
            heard: None,
            now: 1_700_000_000_000,
            paths: [Path::Fine; 3],
            mute: [false; 3],
            evicted: false,
            writes: 0,
            probes: 0,
        }
    }

    fn ask(&mut self, state: &mut State, region: usize) {
        if self.mute[region] {
            return;
        }
        self.probes += 1;
        let health = match self.paths[region] {
            Path::CutOff => Health::Down,
            _ => Health::Healthy,
        };
        let obs = Observation {
            target: "api".into(),
            at_ms: self.now,
            health,
            status: Some(if health == Health::Down { 503 } else { 200 }),
            latency_ms: 20,
            error: (health == Health::Down).then(|| "unexpected status 503".into()),
            cert: None,
        };
        state.take_observations(&self.config, REGIONS[region], self.now, &[obs], self.now);
    }

    fn cycle(&mut self) {
        let mut state: State = serde_json::from_str(&self.stored).unwrap();
        if let (Some(previous), false) = (&self.heard, self.evicted) {
            state.carry_heard(previous);
        }
        let start = self.now;
        state.reconcile(&self.config, start, false);
        for region in 0..3 {
            self.ask(&mut state, region);
        }
        loop {
            let next = state
                .view_confirms(&self.config)
                .into_iter()
                .filter(|(r, _, _)| !self.mute[REGIONS.iter().position(|x| x == r).unwrap()])
                .map(|(r, _, at)| (REGIONS.iter().position(|x| *x == r).unwrap(), at))
                .min_by_key(|(_, at)| *at);
            match next {
                Some((region, at)) if at < start + self.config.interval_ms() => {
                    self.now = at;
                    self.ask(&mut state, region);
                }
                _ => break,
            }
        }
        state.tick(&self.config, &History::default(), None, self.now);
        let text = serde_json::to_string(&crate::core::budget::worth_storing(&state)).unwrap();
        if text != self.stored {
            self.writes += 1;
            self.stored = text;
        }
        self.heard = Some(state);
        self.now = start + MIN;
    }

    fn run(&mut self, cycles: usize) -> &State {
        for _ in 0..cycles {
            self.cycle();
        }
        self.heard.as_ref().unwrap()
    }
}

fn kinds(state: &State, kind: &str) -> usize {
    state
        .vantage_notes
        .iter()
        .filter(|n| n.kind == kind)
        .count()
}

#[test]
fn region_objects_asked_by_a_coordinator_that_reads_its_state_back_each_cycle() {
    let mut c = Coordinator::new();
    c.run(3);
    let writes = c.writes;
    assert_eq!(c.run(5).incidents.len(), 0);
    assert_eq!(c.writes, writes, "a steady cycle writes nothing");
    assert_eq!(c.probes, 3 * 8, "one probe per region object a cycle");

    // One region cut off: its view confirms within the cycle, one note.
    c.paths[0] = Path::CutOff;
    let state = c.run(5);
    assert!(state.incidents.is_empty());
    assert_eq!(kinds(state, "seen_down_partly"), 1);
    assert_eq!(state.vantage_notes[0].regions, ["weur"]);
    assert_eq!(state.targets["api"].health, Health::Healthy);

    // Two: the incident, with who saw what.
    c.paths[1] = Path::CutOff;
    let state = c.run(1);
    assert_eq!(
        state.incidents.len(),
        1,
        "the confirm within the cycle decides"
    );
    assert_eq!(
        seen_from(&state.incidents[0].history[0]),
        [
            ("weur", Some(Health::Down)),
            ("enam", Some(Health::Down)),
            ("apac", Some(Health::Healthy)),
        ]
    );
    c.paths = [Path::Fine; 3];
    let state = c.run(2);
    assert!(state.incidents[0].resolved_at_ms.is_some());
}

#[test]
fn a_region_object_that_stops_answering_is_a_silent_prober_never_an_outage() {
    let mut c = Coordinator::new();
    c.run(3);
    // apac stops answering, and enam is cut off from the target: one bad
    // view is fresh, apac's counts neither way.
    c.mute[2] = true;
    c.paths[1] = Path::CutOff;
    let state = c.run(6);
    assert!(state.incidents.is_empty(), "never a false outage");
    assert_eq!(kinds(state, "prober_silent"), 1, "after prober_silent_s");
    assert_eq!(
        state
            .vantage_notes
            .iter()
            .find(|n| n.kind == "prober_silent")
            .unwrap()
            .regions,
        ["apac"]
    );
    c.mute[2] = false;
    assert_eq!(kinds(c.run(1), "prober_back"), 1);

    // The fault this guards against: without what the isolate heard, each
    // cycle would measure the silence afresh and never call it.
    let mut evicted = Coordinator::new();
    evicted.evicted = true;
    evicted.run(3);
    evicted.mute[2] = true;
    assert_eq!(kinds(evicted.run(10), "prober_silent"), 0);
}
