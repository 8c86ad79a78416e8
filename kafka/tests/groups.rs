//! The group coordinator against a minimal client of the protocol: joining in two steps,
//! the leader's assignments handed to every member, rebalances when members join, leave, stop
//! heartbeating or miss the rebalance, static members that restart without a rebalance, and
//! committed offsets (with their metadata) shared with the log's own consumers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Client, fetch_for, fetch_records, produce, serve, stop, test_dir};
use floodgate::{Offset, Record, TopicConfig};
use floodgate_kafka::ServerConfig;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const SESSION_MS: i32 = 10_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// Fast timings: no initial delay, sessions from 100 ms.
fn quick(config: &mut ServerConfig) {
    config.groups.initial_rebalance_delay = Duration::ZERO;
    config.groups.min_session = Duration::from_millis(100);
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A member's connection and what the coordinator told it.
struct Member {
    client: Client,
    id: String,
    generation: i32,
    instance: Option<String>,
    session_ms: i32,
    rebalance_ms: i32,
    protocols: Vec<(&'static str, &'static [u8])>,
}

impl Member {
    fn new(addr: SocketAddr) -> Member {
        Member {
            client: Client::connect(addr),
            id: String::new(),
            generation: -1,
            instance: None,
            session_ms: SESSION_MS,
            rebalance_ms: SESSION_MS,
            protocols: vec![("range", b"range-meta"), ("roundrobin", b"rr-meta")],
        }
    }

    fn join_request(&self) -> JoinGroupRequest {
        let mut r = JoinGroupRequest::default();
        r.group_id = GroupId(s("g"));
        r.session_timeout_ms = self.session_ms;
        r.rebalance_timeout_ms = self.rebalance_ms;
        r.member_id = s(&self.id);
        r.group_instance_id = self.instance.as_deref().map(s);
        r.protocol_type = s("consumer");
        r.protocols = (self.protocols.iter())
            .map(|(name, meta)| {
                let mut p = JoinGroupRequestProtocol::default();
                p.name = s(name);
                p.metadata = Bytes::from_static(meta);
                p
            })
            .collect();
        r
    }

    /// One JoinGroup at v9; notes the member id and generation it gets.
    fn join_once(&mut self) -> JoinGroupResponse {
        let r: JoinGroupResponse = self.client.call(ApiKey::JoinGroup, 9, &self.join_request());
        if !r.member_id.is_empty() {
            self.id = r.member_id.to_string();
        }
        if r.error_code == 0 {
            self.generation = r.generation_id;
        }
        r
    }

    /// Joins, taking the member id the coordinator requires first if it has none.
    fn join(&mut self) -> JoinGroupResponse {
        let r = self.join_once();
        if r.error_code == code(ResponseError::MemberIdRequired) {
            assert!(!self.id.is_empty());
            return self.join_once();
        }
        r
    }

    fn sync(&mut self, assignments: &[(&str, &'static [u8])]) -> SyncGroupResponse {
        let mut r = SyncGroupRequest::default();
        r.group_id = GroupId(s("g"));
        r.generation_id = self.generation;
        r.member_id = s(&self.id);
        r.group_instance_id = self.instance.as_deref().map(s);
        r.protocol_type = Some(s("consumer"));
        r.assignments = (assignments.iter())
            .map(|(id, a)| {
                let mut x = SyncGroupRequestAssignment::default();
                x.member_id = s(id);
                x.assignment = Bytes::from_static(a);
                x
            })
            .collect();
        self.client.call(ApiKey::SyncGroup, 5, &r)
    }

    fn heartbeat(&mut self) -> i16 {
        let mut r = HeartbeatRequest::default();
        r.group_id = GroupId(s("g"));
        r.generation_id = self.generation;
        r.member_id = s(&self.id);
        r.group_instance_id = self.instance.as_deref().map(s);
        let response: HeartbeatResponse = self.client.call(ApiKey::Heartbeat, 4, &r);
        response.error_code
    }

    fn leave(&mut self) -> LeaveGroupResponse {
        let mut who = MemberIdentity::default();
        who.member_id = s(&self.id);
        who.group_instance_id = self.instance.as_deref().map(s);
        let mut r = LeaveGroupRequest::default();
        r.group_id = GroupId(s("g"));
        r.members = vec![who];
        self.client.call(ApiKey::LeaveGroup, 5, &r)
    }
}

/// Joins `members` together (each in its own thread, as separate clients do).
fn join_all(members: &mut [&mut Member]) -> Vec<JoinGroupResponse> {
    std::thread::scope(|scope| {
        let joins: Vec<_> = (members.iter_mut())
            .map(|m| scope.spawn(move || m.join()))
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

/// Syncs `followers` (waiting) and then the leader with `assignments`; returns every
/// member's assignment, the leader's last.
fn sync_all(
    leader: &mut Member,
    followers: &mut [&mut Member],
    assignments: &[(&str, &'static [u8])],
) -> Vec<SyncGroupResponse> {
    std::thread::scope(|scope| {
        let waiting: Vec<_> = (followers.iter_mut())
            .map(|m| scope.spawn(move || m.sync(&[])))
            .collect();
        // The followers' SyncGroups reach the coordinator first.
        std::thread::sleep(Duration::from_millis(100));
        let mine = leader.sync(assignments);
        let mut out: Vec<SyncGroupResponse> =
            waiting.into_iter().map(|w| w.join().unwrap()).collect();
        out.push(mine);
        out
    })
}

fn describe(
    client: &mut Client,
) -> kafka_protocol::messages::describe_groups_response::DescribedGroup {
    let mut r = DescribeGroupsRequest::default();
    r.groups = vec![GroupId(s("g"))];
    let mut response: DescribeGroupsResponse = client.call(ApiKey::DescribeGroups, 5, &r);
    response.groups.remove(0)
}

#[test]
fn members_join_get_the_leaders_assignments_and_rebalance_when_one_leaves() {
    let dir = test_dir("groups-rebalance");
    let (log, server) = serve(dir.path(), quick);
    let addr = server.local_addr();
    let mut a = Member::new(addr);
    // v4 and later: a member without an id is given one and must join again with it.
    let first = a.join_once();
    assert_eq!(first.error_code, code(ResponseError::MemberIdRequired));
    assert!(
        first.member_id.starts_with("floodgate-test-"),
        "{:?}",
        first.member_id
    );
    let joined = a.join();
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), a.id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(joined.members.len(), 1);
    assert_eq!(&joined.members[0].metadata[..], b"range-meta");
    let synced = a.sync(&[(&a.id.clone(), b"a-1")]);
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"a-1"[..])
    );
    assert_eq!(a.heartbeat(), 0);

    // B joins: A learns of the rebalance from its heartbeat and joins again.
    let mut b = Member::new(addr);
    b.protocols = vec![("roundrobin", b"rr-b"), ("range", b"range-b")];
    let joins = std::thread::scope(|scope| {
        let bj = scope.spawn(|| b.join());
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.heartbeat() != code(ResponseError::RebalanceInProgress) {
            assert!(Instant::now() < deadline, "no rebalance");
            std::thread::sleep(Duration::from_millis(10));
        }
        let aj = a.join();
        (aj, bj.join().unwrap())
    });
    let (aj, bj) = joins;
    assert_eq!((aj.error_code, bj.error_code), (0, 0));
    assert_eq!((aj.generation_id, bj.generation_id), (2, 2));
    assert_eq!(aj.leader.as_str(), a.id, "the leader stays");
    assert_eq!(bj.leader.as_str(), a.id);
    assert!(bj.members.is_empty(), "only the leader gets the members");
    let ids: Vec<&str> = aj.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(ids, vec![a.id.as_str(), b.id.as_str()]);
    // One vote each: the tie goes to the first member's order.
    assert_eq!(aj.protocol_name.as_deref(), Some("range"));
    assert_eq!(&aj.members[1].metadata[..], b"range-b");
    let (ai, bi) = (a.id.clone(), b.id.clone());
    let synced = sync_all(&mut a, &mut [&mut b], &[(&ai, b"a-2"), (&bi, b"b-2")]);
    assert_eq!(&synced[0].assignment[..], b"b-2");
    assert_eq!(&synced[1].assignment[..], b"a-2");
    assert_eq!((a.heartbeat(), b.heartbeat()), (0, 0));

    // What the group looks like from outside.
    let mut admin = Client::connect(addr);
    let g = describe(&mut admin);
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.protocol_data.as_str(), "range");
    assert_eq!(g.members.len(), 2);
    assert_eq!(g.members[1].client_host.as_str(), "/127.0.0.1");
    assert_eq!(&g.members[1].member_assignment[..], b"b-2");
    let listed: ListGroupsResponse =
        admin.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let row = listed
        .groups
        .iter()
        .find(|r| r.group_id.as_str() == "g")
        .unwrap();
    assert_eq!(
        (row.protocol_type.as_str(), row.group_state.as_str()),
        ("consumer", "Stable")
    );

    // A stale generation and an unknown member are told so.
    let generation = b.generation;
    b.generation -= 1;
    assert_eq!(b.heartbeat(), code(ResponseError::IllegalGeneration));
    b.generation = generation;
    let mut stranger = Member::new(addr);
    stranger.id = "nobody".into();
    stranger.generation = generation;
    assert_eq!(stranger.heartbeat(), code(ResponseError::UnknownMemberId));

    // A leaves: B is told to rebalance and becomes the leader of generation 3.
    let left = a.leave();
    assert_eq!(left.error_code, 0);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(b.heartbeat(), code(ResponseError::RebalanceInProgress));
    let started = Instant::now();
    let bj = b.join();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((bj.error_code, bj.generation_id), (0, 3));
    assert_eq!(bj.leader.as_str(), b.id);
    assert_eq!(
        bj.protocol_name.as_deref(),
        Some("roundrobin"),
        "B's own first choice now"
    );
    assert_eq!(
        a.leave().members[0].error_code,
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(b.leave().error_code, 0);
    assert_eq!(describe(&mut admin).group_state.as_str(), "Empty");
    stop(log, server);
}

/// A member that stops heartbeating is dropped after its session timeout; one that does not
/// join a rebalance in time is dropped when the rebalance timeout ends it.
#[test]
fn silent_members_are_expired_and_late_ones_dropped() {
    let dir = test_dir("groups-expiry");
    let (log, server) = serve(dir.path(), quick);
    let addr = server.local_addr();
    let (mut a, mut b) = (Member::new(addr), Member::new(addr));
    a.session_ms = 400;
    b.session_ms = 400;
    a.rebalance_ms = 600;
    b.rebalance_ms = 600;
    a.join();
    let ai = a.id.clone();
    assert_eq!(a.sync(&[(&ai, b"a")]).error_code, 0);
    std::thread::scope(|scope| {
        let bj = scope.spawn(|| b.join());
        while a.heartbeat() != code(ResponseError::RebalanceInProgress) {
            std::thread::sleep(Duration::from_millis(10));
        }
        a.join();
        bj.join().unwrap();
    });
    let (ai, bi) = (a.id.clone(), b.id.clone());
    sync_all(&mut a, &mut [&mut b], &[(&ai, b"a"), (&bi, b"b")]);

    // B goes silent (a crashed client); A keeps heartbeating and is told to rebalance.
    let silent_since = Instant::now();
    while a.heartbeat() == 0 {
        assert!(
            silent_since.elapsed() < Duration::from_secs(5),
            "B was never expired"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(silent_since.elapsed() >= Duration::from_millis(300));
    let aj = a.join();
    assert_eq!(aj.members.len(), 1, "B is gone");
    assert_eq!(b.heartbeat(), code(ResponseError::UnknownMemberId));

    // C joins; A rejoins but B' (a member that heartbeats and never rejoins) is dropped when
    // the rebalance timeout runs out.
    let ai = a.id.clone();
    a.sync(&[(&ai, b"a")]);
    let mut c = Member::new(addr);
    c.session_ms = 400;
    c.rebalance_ms = 600;
    let mut late = Member::new(addr);
    late.session_ms = 5_000;
    late.rebalance_ms = 600;
    std::thread::scope(|scope| {
        let lj = scope.spawn(|| late.join());
        while a.heartbeat() != code(ResponseError::RebalanceInProgress) {
            std::thread::sleep(Duration::from_millis(10));
        }
        a.join();
        lj.join().unwrap();
    });
    let (ai, li) = (a.id.clone(), late.id.clone());
    sync_all(&mut a, &mut [&mut late], &[(&ai, b"a"), (&li, b"l")]);
    let started = Instant::now();
    let joins = std::thread::scope(|scope| {
        let cj = scope.spawn(|| c.join());
        while a.heartbeat() != code(ResponseError::RebalanceInProgress) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let aj = scope.spawn(|| a.join());
        // `late` heartbeats through the rebalance but never joins.
        let mut beats = Vec::new();
        while !cj.is_finished() {
            beats.push(late.heartbeat());
            std::thread::sleep(Duration::from_millis(50));
        }
        (aj.join().unwrap(), cj.join().unwrap(), beats)
    });
    let (aj, cj, beats) = joins;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        beats
            .iter()
            .all(|&b| b == code(ResponseError::RebalanceInProgress)),
        "{beats:?}"
    );
    assert_eq!((aj.error_code, cj.error_code), (0, 0));
    assert_eq!(aj.members.len(), 2, "A and C; the late member was dropped");
    assert_eq!(late.heartbeat(), code(ResponseError::UnknownMemberId));
    stop(log, server);
}

/// Static members (a group instance id) that restart take their place back without a
/// rebalance and get their assignment; the old member id is fenced.
#[test]
fn static_members_restart_without_a_rebalance() {
    let dir = test_dir("groups-static");
    // Members that start together join one generation.
    let (log, server) = serve(dir.path(), |c| {
        quick(c);
        c.groups.initial_rebalance_delay = Duration::from_millis(300);
    });
    let addr = server.local_addr();
    let (mut a, mut b) = (Member::new(addr), Member::new(addr));
    a.instance = Some("host-a".into());
    b.instance = Some("host-b".into());
    let joins = join_all(&mut [&mut a, &mut b]);
    assert!(
        joins.iter().all(|j| j.error_code == 0),
        "static members need no second join"
    );
    let generation = a.generation;
    let (leader, follower) = match joins[0].leader.as_str() == a.id {
        true => (&mut a, &mut b),
        false => (&mut b, &mut a),
    };
    let (li, fi) = (leader.id.clone(), follower.id.clone());
    let synced = sync_all(leader, &mut [follower], &[(&li, b"lead"), (&fi, b"follow")]);
    assert_eq!(&synced[0].assignment[..], b"follow");

    // The follower restarts: a new connection, no member id, the same instance id.
    let old_id = follower.id.clone();
    let instance = follower.instance.clone();
    let mut again = Member::new(addr);
    again.instance = instance;
    let rejoined = again.join_once();
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation, "no rebalance");
    assert_ne!(again.id, old_id);
    let synced = again.sync(&[]);
    assert_eq!(&synced.assignment[..], b"follow", "its assignment is kept");
    assert_eq!(leader.heartbeat(), 0, "the leader sees no rebalance");
    assert_eq!(follower.heartbeat(), code(ResponseError::FencedInstanceId));
    // Leaving by instance id alone.
    let mut who = MemberIdentity::default();
    who.group_instance_id = again.instance.as_deref().map(s);
    let mut r = LeaveGroupRequest::default();
    r.group_id = GroupId(s("g"));
    r.members = vec![who];
    let left: LeaveGroupResponse = again.client.call(ApiKey::LeaveGroup, 5, &r);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(leader.heartbeat(), code(ResponseError::RebalanceInProgress));
    stop(log, server);
}

/// Joins that cannot be served are refused with the protocol's error: a session timeout
/// outside the broker's bounds, a different protocol type, no protocol in common, a group id
/// the log cannot store; the old two-field join (before v4) needs no second step.
#[test]
fn joins_that_do_not_fit_are_refused() {
    let dir = test_dir("groups-refused");
    let (log, server) = serve(dir.path(), quick);
    let addr = server.local_addr();
    let mut a = Member::new(addr);
    a.session_ms = 50;
    assert_eq!(
        a.join().error_code,
        code(ResponseError::InvalidSessionTimeout)
    );
    a.session_ms = SESSION_MS;
    let mut old = a.join_request();
    old.group_instance_id = None;
    let r: JoinGroupResponse = a.client.call(ApiKey::JoinGroup, 1, &old);
    assert_eq!((r.error_code, r.generation_id), (0, 1), "v1 joins at once");
    a.id = r.member_id.to_string();
    a.generation = 1;
    let mut b = Member::new(addr);
    b.protocols = vec![("sticky", b"x")];
    assert_eq!(
        b.join().error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
    let mut c = Member::new(addr);
    let mut other_type = c.join_request();
    other_type.protocol_type = s("connect");
    let r: JoinGroupResponse = c.client.call(ApiKey::JoinGroup, 9, &other_type);
    assert_eq!(r.error_code, code(ResponseError::InconsistentGroupProtocol));
    let mut bad = c.join_request();
    bad.group_id = GroupId(s(""));
    let r: JoinGroupResponse = c.client.call(ApiKey::JoinGroup, 9, &bad);
    assert_eq!(r.error_code, code(ResponseError::InvalidGroupId));
    // Any other group id is one, as with Kafka: the join goes on to its first step.
    let mut odd = c.join_request();
    odd.group_id = GroupId(s("orders app:1/grüße"));
    let r: JoinGroupResponse = c.client.call(ApiKey::JoinGroup, 9, &odd);
    assert_eq!(r.error_code, code(ResponseError::MemberIdRequired));
    assert_eq!(a.heartbeat(), 0, "the group is untouched");
    stop(log, server);
}

#[test]
fn find_coordinator_names_this_broker_for_groups() {
    let dir = test_dir("groups-coordinator");
    let (log, server) = serve(dir.path(), quick);
    let mut client = Client::connect(server.local_addr());
    let port = i32::from(server.local_addr().port());
    let mut old = FindCoordinatorRequest::default();
    old.key = s("logistics");
    let r: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 0, &old);
    assert_eq!((r.error_code, r.node_id.0, r.port), (0, 0, port));
    assert_eq!(r.host.as_str(), "127.0.0.1");
    let mut new = FindCoordinatorRequest::default();
    new.coordinator_keys = vec![s("a"), s("")];
    let r: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &new);
    assert_eq!(
        (r.coordinators[0].error_code, r.coordinators[0].port),
        (0, port)
    );
    assert_eq!(
        r.coordinators[1].error_code,
        code(ResponseError::InvalidGroupId)
    );
    let mut txn = FindCoordinatorRequest::default();
    txn.key_type = 1;
    txn.coordinator_keys = vec![s("orders-tx")];
    let r: FindCoordinatorResponse = client.call(ApiKey::FindCoordinator, 4, &txn);
    let refused = &r.coordinators[0];
    assert_eq!(
        refused.error_code,
        code(ResponseError::CoordinatorNotAvailable)
    );
    assert!(
        refused
            .error_message
            .as_deref()
            .unwrap()
            .contains("transactions")
    );
    stop(log, server);
}

fn commit_request(
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64, &str)],
) -> OffsetCommitRequest {
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s("g"));
    r.generation_id_or_member_epoch = generation;
    r.member_id = s(member);
    for &(topic, partition, offset, metadata) in offsets {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = partition;
        p.committed_offset = offset;
        p.committed_metadata = Some(s(metadata));
        match r.topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => {
                let mut t = OffsetCommitRequestTopic::default();
                t.name = TopicName(s(topic));
                t.partitions = vec![p];
                r.topics.push(t);
            }
        }
    }
    r
}

fn commit_codes(client: &mut Client, request: &OffsetCommitRequest) -> Vec<i16> {
    let r: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, request);
    (r.topics.iter())
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// Committed offsets over the protocol are the log's: OffsetFetch (old and batched layouts,
/// all topics or some) gives them back with their metadata, a Rust consumer of the group starts
/// from them, they survive a restart, and commits from outside the generation are refused.
#[test]
fn offsets_are_committed_fetched_and_shared_with_the_logs_consumers() {
    let dir = test_dir("groups-offsets");
    let (log, server) = serve(dir.path(), quick);
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    let mut producer = log.producer();
    let mut acks = Vec::new();
    for p in 0..3 {
        for _ in 0..10 {
            acks.push(producer.send("t", Record::new(b"r").partition(p)).unwrap());
        }
    }
    for ack in acks {
        ack.wait().unwrap();
    }
    let addr = server.local_addr();
    let mut client = Client::connect(addr);
    // A consumer that assigns itself partitions commits with generation -1.
    let simple = commit_request(
        -1,
        "",
        &[("t", 0, 4, "m-0"), ("t", 2, 9, ""), ("t", 3, 1, "")],
    );
    let unknown = code(ResponseError::UnknownTopicOrPartition);
    assert_eq!(commit_codes(&mut client, &simple), vec![0, 0, unknown]);
    let too_long = "x".repeat(floodgate::OFFSET_METADATA_BYTES_MAX + 1);
    let big = commit_request(-1, "", &[("t", 1, 1, &too_long)]);
    assert_eq!(
        commit_codes(&mut client, &big),
        vec![code(ResponseError::OffsetMetadataTooLarge)]
    );

    // v1 (old layout, topics named) and v8 (batched, all topics).
    let mut v1 = OffsetFetchRequest::default();
    v1.group_id = GroupId(s("g"));
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s("t"));
    t.partition_indexes = vec![0, 1, 2];
    v1.topics = Some(vec![t]);
    let r: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 1, &v1);
    let got: Vec<(i32, i64, String)> = (r.topics[0].partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.committed_offset,
                p.metadata.as_deref().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 4, "m-0".into()),
            (1, -1, String::new()),
            (2, 9, String::new())
        ]
    );
    let mut v8 = OffsetFetchRequest::default();
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s("g"));
    g.topics = None;
    let mut other = OffsetFetchRequestGroup::default();
    other.group_id = GroupId(s("never"));
    let mut ts = OffsetFetchRequestTopics::default();
    ts.name = TopicName(s("t"));
    ts.partition_indexes = vec![1];
    other.topics = Some(vec![ts]);
    v8.groups = vec![g, other];
    let r: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 8, &v8);
    let all: Vec<(i32, i64)> = (r.groups[0].topics[0].partitions.iter())
        .map(|p| (p.partition_index, p.committed_offset))
        .collect();
    assert_eq!(all, vec![(0, 4), (2, 9)], "every partition it committed");
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);

    // The log's own consumer of the group starts there.
    let consumer = log.consumer("t").group("g").build().unwrap();
    assert_eq!(consumer.position(0).unwrap(), Offset(4));
    assert_eq!(consumer.position(2).unwrap(), Offset(9));
    drop(consumer);

    // With members, commits come from the current generation only.
    let mut a = Member::new(addr);
    a.join();
    let stale = commit_request(a.generation - 1, &a.id, &[("t", 0, 5, "")]);
    let stranger = commit_request(a.generation, "nobody", &[("t", 0, 5, "")]);
    let simple = commit_request(-1, "", &[("t", 0, 5, "")]);
    assert_eq!(
        commit_codes(&mut client, &stale),
        vec![code(ResponseError::IllegalGeneration)]
    );
    assert_eq!(
        commit_codes(&mut client, &stranger),
        vec![code(ResponseError::UnknownMemberId)]
    );
    assert_eq!(
        commit_codes(&mut client, &simple),
        vec![code(ResponseError::UnknownMemberId)]
    );
    let early = commit_request(a.generation, &a.id, &[("t", 0, 5, "")]);
    assert_eq!(
        commit_codes(&mut client, &early),
        vec![code(ResponseError::RebalanceInProgress)],
        "before the leader's SyncGroup"
    );
    let ai = a.id.clone();
    a.sync(&[(&ai, b"all")]);
    let current = commit_request(a.generation, &a.id, &[("t", 0, 6, "after")]);
    assert_eq!(commit_codes(&mut client, &current), vec![0]);

    // DeleteGroups: not while it has members; then its offsets are gone.
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g")), GroupId(s("unheard-of"))];
    let r: DeleteGroupsResponse = client.call(ApiKey::DeleteGroups, 2, &del);
    let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
    assert_eq!(
        codes,
        vec![
            code(ResponseError::NonEmptyGroup),
            code(ResponseError::GroupIdNotFound)
        ]
    );
    stop(log, server);

    // After a restart: the offsets and their metadata are still there.
    let (log, server) = serve(dir.path(), quick);
    let mut client = Client::connect(server.local_addr());
    let r: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 1, &v1);
    let p0 = &r.topics[0].partitions[0];
    assert_eq!(
        (p0.committed_offset, p0.metadata.as_deref()),
        (6, Some("after"))
    );
    let listed: ListGroupsResponse =
        client.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let row = listed
        .groups
        .iter()
        .find(|r| r.group_id.as_str() == "g")
        .unwrap();
    assert_eq!(row.group_state.as_str(), "Empty");
    assert_eq!(describe(&mut client).group_state.as_str(), "Empty");
    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g"))];
    let r: DeleteGroupsResponse = client.call(ApiKey::DeleteGroups, 2, &del);
    assert_eq!(r.results[0].error_code, 0);
    let r: OffsetFetchResponse = client.call(ApiKey::OffsetFetch, 1, &v1);
    assert_eq!(r.topics[0].partitions[0].committed_offset, -1);
    assert_eq!(describe(&mut client).group_state.as_str(), "Dead");
    stop(log, server);
}

/// A consumer-protocol assignment (version 0) of `partitions` of `topic`.
fn assignment(topic: &str, partitions: &[i32]) -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0, 0, 1];
    b.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
    for p in partitions {
        b.extend_from_slice(&p.to_be_bytes());
    }
    b.extend_from_slice(&(-1i32).to_be_bytes()); // no user data
    b
}

fn alter_rate(client: &mut Client, group: &str, value: Option<&str>) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    let mut c = AlterableConfig::default();
    c.name = s("floodgate.rate.msgs.per.sec");
    c.config_operation = if value.is_some() { 0 } else { 1 };
    c.value = value.map(s);
    let mut res = AlterConfigsResource::default();
    res.resource_type = 32;
    res.resource_name = s(group);
    res.configs = vec![c];
    let mut r = IncrementalAlterConfigsRequest::default();
    r.resources = vec![res];
    let response: IncrementalAlterConfigsResponse =
        client.call(ApiKey::IncrementalAlterConfigs, 1, &r);
    response.responses[0].error_code
}

fn described_rate(client: &mut Client, group: &str) -> Option<String> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 32;
    res.resource_name = s(group);
    res.configuration_keys = None;
    let mut r = DescribeConfigsRequest::default();
    r.resources = vec![res];
    let response: DescribeConfigsResponse = client.call(ApiKey::DescribeConfigs, 4, &r);
    let result = &response.results[0];
    assert_eq!(result.error_code, 0);
    let rate = (result.configs.iter())
        .find(|c| c.name.as_str() == "floodgate.rate.msgs.per.sec")
        .unwrap();
    assert!(!rate.read_only);
    rate.value.as_ref().map(|v| v.to_string())
}

/// A member that joins `group` alone and assigns itself `partitions` of `topic`; its own
/// connection is the one it fetches on.
fn join_alone(addr: SocketAddr, group: &str, topic: &str, partitions: &[i32]) -> Member {
    let m = Member::new(addr);
    let mut join = m.join_request();
    join.group_id = GroupId(s(group));
    let mut coordinator = Client::connect(addr);
    let r: JoinGroupResponse = coordinator.call(ApiKey::JoinGroup, 9, &join);
    join.member_id = r.member_id.clone();
    let r: JoinGroupResponse = coordinator.call(ApiKey::JoinGroup, 9, &join);
    assert_eq!(r.error_code, 0);
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s(group));
    sync.generation_id = r.generation_id;
    sync.member_id = r.member_id.clone();
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = r.member_id.clone();
    a.assignment = Bytes::from(assignment(topic, partitions));
    sync.assignments = vec![a];
    let synced: SyncGroupResponse = coordinator.call(ApiKey::SyncGroup, 5, &sync);
    assert_eq!(synced.error_code, 0);
    m
}

/// A member of a paced group far behind the partitions' ends reads only what its fetches are
/// given, never windows ahead (which queue before the writer's commits), its first fetch
/// included: half a second of fetches at 2,000 records/s reads a small part of a log not in
/// memory.
#[test]
fn a_paced_member_far_behind_reads_only_what_it_is_given() {
    let dir = test_dir("groups-paced-exact");
    let rate = floodgate::RateLimit {
        msgs_per_s: Some(2_000.0),
        bytes_per_s: None,
    };
    let paced = |c: &mut floodgate_kafka::ServerConfig| {
        quick(c);
        c.group_rates = vec![("paced".to_owned(), rate)];
    };
    let (log, server) = serve(dir.path(), paced);
    log.create_topic("p", TopicConfig::new(2)).unwrap();
    let mut admin = Client::connect(server.local_addr());
    produce(&mut admin, "p", 2, 3_000, 20);
    drop(admin);
    stop(log, server);
    // Opened again: nothing of the log in memory.
    let (log, server) = serve(dir.path(), paced);
    // The bytes of frames the segments hold.
    let on_disk: u64 = (std::fs::read_dir(dir.path().join("shard-000")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let known = floodgate::inspect::Known::default();
            let (frames, _) = floodgate::inspect::scan_segment_file(&p, 1 << 20, known).unwrap();
            frames
                .iter()
                .map(|f| u64::from(f.entry.frame_bytes))
                .sum::<u64>()
        })
        .sum();
    let addr = server.local_addr();
    let mut m = join_alone(addr, "paced", "p", &[0, 1]);
    let read_before = log.stats()[0].read_disk_bytes;
    let mut next = [0i64; 2];
    let (received, _) = fetch_for(&mut m.client, "p", &mut next, Duration::from_millis(500));
    let read = log.stats()[0].read_disk_bytes - read_before;
    assert!(received > 0);
    assert!(
        read * 8 < on_disk,
        "{received} records cost {read} bytes of reads, of a log of {on_disk}"
    );
    stop(log, server);
}

/// A paced group's member gets records from its fetches at the group's rate (never more than
/// the rate over the time plus a burst and a batch, whatever it asks for); a fetch from a
/// client outside the group is not paced; the rate is changed and removed at runtime through
/// IncrementalAlterConfigs on the group, and DescribeConfigs shows it.
#[test]
fn a_paced_groups_fetches_take_the_groups_rate() {
    let dir = test_dir("groups-paced");
    let rate = floodgate::RateLimit {
        msgs_per_s: Some(2_000.0),
        bytes_per_s: None,
    };
    let (log, server) = serve(dir.path(), |c| {
        quick(c);
        c.group_rates = vec![("paced".to_owned(), rate)];
    });
    log.create_topic("p", TopicConfig::new(2)).unwrap();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    produce(&mut admin, "p", 2, 400, 10);
    assert_eq!(described_rate(&mut admin, "paced").as_deref(), Some("2000"));
    assert_eq!(described_rate(&mut admin, "other"), None);

    let mut m = join_alone(addr, "paced", "p", &[0, 1]);

    // The member's fetches (its own connection, as clients fetch) for about a second.
    let mut next = [0i64; 2];
    let span = Duration::from_millis(1_000);
    let (received, elapsed) = fetch_for(&mut m.client, "p", &mut next, span);
    let most = (2_000.0 * elapsed) as u64 + 20 + 2 * 10;
    assert!(
        received <= most,
        "{received} records in {elapsed:.2} s (at most {most})"
    );
    assert!(
        received >= 400,
        "the member is served: {received} in {elapsed:.2} s"
    );

    // Another client is not paced: one fetch gets everything from where it asks.
    let mut outsider = [0i64; 2];
    let mut other = Client::connect(addr);
    let mut fetched = 0;
    while fetched < 8_000 {
        let got = fetch_records(&mut other, "p", &mut outsider);
        assert!(got > 0);
        fetched += got;
    }

    // Faster at runtime, then unpaced: the rest comes at once.
    assert_eq!(alter_rate(&mut admin, "paced", Some("5000")), 0);
    assert_eq!(described_rate(&mut admin, "paced").as_deref(), Some("5000"));
    assert_eq!(
        alter_rate(&mut admin, "paced", Some("-3")),
        code(ResponseError::InvalidConfig)
    );
    let span = Duration::from_millis(500);
    let (faster, elapsed) = fetch_for(&mut m.client, "p", &mut next, span);
    let most = (5_000.0 * elapsed) as u64 + 50 + 2 * 10;
    assert!(
        faster <= most,
        "{faster} records in {elapsed:.2} s (at most {most})"
    );
    assert_eq!(alter_rate(&mut admin, "paced", None), 0);
    assert_eq!(described_rate(&mut admin, "paced"), None);
    let left = 8_000 - (next[0] + next[1]) as u64;
    assert!(left > 0);
    assert_eq!(
        fetch_records(&mut m.client, "p", &mut next),
        left,
        "unpaced"
    );
    stop(log, server);
}

/// A connection's requests other than Produce and Fetch are handled in order, as a Kafka
/// broker handles them: commits sent back to back and an OffsetFetch after them, without
/// waiting for the answers, read the last commit (librdkafka's 0030 offset_commit read an
/// older one while they ran at once).
#[test]
fn a_fetch_of_offsets_after_commits_on_one_connection_reads_the_last_commit() {
    let dir = test_dir("groups-ordered");
    let (log, server) = serve(dir.path(), quick);
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut client = Client::connect(server.local_addr());
    let mut fetch = OffsetFetchRequest::default();
    fetch.group_id = GroupId(s("g"));
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s("t"));
    t.partition_indexes = vec![0];
    fetch.topics = Some(vec![t]);
    for round in 0..20i64 {
        let mut ids = Vec::new();
        for k in 1..=5 {
            let commit = commit_request(-1, "", &[("t", 0, round * 10 + k, "")]);
            ids.push(client.send(ApiKey::OffsetCommit, 8, &commit));
        }
        let fetch_id = client.send(ApiKey::OffsetFetch, 1, &fetch);
        for id in ids {
            let (got, mut body) = client.receive_raw(ApiKey::OffsetCommit, 8).unwrap();
            assert_eq!(got, id);
            let r =
                <OffsetCommitResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 8)
                    .unwrap();
            assert_eq!(r.topics[0].partitions[0].error_code, 0);
        }
        let (got, mut body) = client.receive_raw(ApiKey::OffsetFetch, 1).unwrap();
        assert_eq!(got, fetch_id);
        let r = <OffsetFetchResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 1)
            .unwrap();
        assert_eq!(
            r.topics[0].partitions[0].committed_offset,
            round * 10 + 5,
            "round {round}"
        );
    }
    stop(log, server);
}
