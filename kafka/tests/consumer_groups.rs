//! Groups of the consumer protocol (KIP-848) against a minimal client: members join, are
//! assigned by the server, give up and take partitions through their heartbeats, leave and
//! expire; requests that do not fit are refused with Kafka's errors; commits and offset
//! fetches are checked against the member's epoch; the group is described and listed; a paced
//! group paces its consumer-protocol members' fetches.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, fetch_for, fetch_records, name, produce, serve, stop, test_dir};
use floodgate::TopicConfig;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, JoinGroupRequest,
    JoinGroupResponse, ListGroupsRequest, ListGroupsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn code(e: ResponseError) -> i16 {
    e.code()
}

/// A member of a consumer-protocol group: its connection, id, epoch and what it owns.
struct Member {
    client: Client,
    group: String,
    id: String,
    epoch: i32,
    owned: BTreeSet<(Uuid, i32)>,
}

impl Member {
    fn new(addr: SocketAddr, group: &str, id: &str) -> Member {
        Member {
            client: Client::connect(addr),
            group: group.to_owned(),
            id: id.to_owned(),
            epoch: 0,
            owned: BTreeSet::new(),
        }
    }

    fn request(&self) -> ConsumerGroupHeartbeatRequest {
        let mut r = ConsumerGroupHeartbeatRequest::default();
        r.group_id = GroupId(s(&self.group));
        r.member_id = s(&self.id);
        r.member_epoch = self.epoch;
        r
    }

    fn call(&mut self, r: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
        self.client.call(ApiKey::ConsumerGroupHeartbeat, 1, r)
    }

    /// Takes an answer as a client does: its epoch, and its assignment when there is one.
    fn take(&mut self, r: &ConsumerGroupHeartbeatResponse) {
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        self.epoch = r.member_epoch;
        if let Some(a) = &r.assignment {
            self.owned = (a.topic_partitions.iter())
                .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic_id, p)))
                .collect();
        }
    }

    /// Joins (epoch 0) subscribed to `topics`.
    fn join(&mut self, topics: &[&str]) -> ConsumerGroupHeartbeatResponse {
        let mut r = self.request();
        r.member_epoch = 0;
        r.rebalance_timeout_ms = 30_000;
        r.subscribed_topic_names = Some(topics.iter().map(|t| name(t)).collect());
        r.subscribed_topic_regex = Some(s(""));
        r.topic_partitions = Some(Vec::new());
        let answer = self.call(&r);
        self.take(&answer);
        answer
    }

    /// A full heartbeat: its epoch and everything it owns.
    fn beat(&mut self) -> ConsumerGroupHeartbeatResponse {
        let mut r = self.request();
        r.topic_partitions = Some(owned_by_topic(&self.owned));
        let answer = self.call(&r);
        self.take(&answer);
        answer
    }

    fn leave(&mut self) -> ConsumerGroupHeartbeatResponse {
        let mut r = self.request();
        r.member_epoch = -1;
        self.call(&r)
    }

    fn partitions(&self) -> Vec<i32> {
        self.owned.iter().map(|(_, p)| *p).collect()
    }
}

fn owned_by_topic(owned: &BTreeSet<(Uuid, i32)>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for &(id, p) in owned {
        match out.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(p),
            _ => {
                let mut t = TopicPartitions::default();
                t.topic_id = id;
                t.partitions = vec![p];
                out.push(t);
            }
        }
    }
    out
}

/// Heartbeats from every member until none of them changes: each owns its share, all the
/// partitions between them.
fn settle(members: &mut [&mut Member], partitions: usize) {
    for _ in 0..10 {
        for m in members.iter_mut() {
            m.beat();
        }
        let total: usize = members.iter().map(|m| m.owned.len()).sum();
        let union: BTreeSet<_> = members.iter().flat_map(|m| m.owned.iter()).collect();
        let epochs: BTreeSet<i32> = members.iter().map(|m| m.epoch).collect();
        if total == partitions && union.len() == partitions && epochs.len() == 1 {
            return;
        }
    }
    panic!("the group did not settle");
}

/// Members join and are assigned by the server; a second member's partitions come once the
/// first gave them up; a member that leaves frees its partitions at once, and the other takes
/// them at its next heartbeat without giving anything up.
#[test]
fn members_are_assigned_by_the_server_and_take_a_leavers_partitions_at_their_next_heartbeat() {
    let dir = test_dir("consumer-groups-join");
    let (log, server) = serve(dir.path(), |c| {
        c.groups.consumer_heartbeat_interval = Duration::from_millis(700);
    });
    log.create_topic("orders", TopicConfig::new(6)).unwrap();
    let addr = server.local_addr();
    let mut a = Member::new(addr, "g", "member-a");
    let answer = a.join(&["orders"]);
    assert_eq!(answer.heartbeat_interval_ms, 700, "the server sets it");
    assert_eq!(answer.member_id.as_deref(), Some("member-a"));
    assert_eq!(a.epoch, 1);
    assert_eq!(a.partitions(), vec![0, 1, 2, 3, 4, 5]);

    let mut b = Member::new(addr, "g", "member-b");
    b.join(&["orders"]);
    assert_eq!(b.epoch, 2);
    assert!(b.owned.is_empty(), "a still owns them");
    // a is told to keep three; it keeps its epoch until it has given up the others.
    a.beat();
    assert_eq!((a.epoch, a.owned.len()), (1, 3));
    a.beat();
    assert_eq!(a.epoch, 2);
    b.beat();
    assert_eq!(b.owned.len(), 3);
    assert!(a.owned.is_disjoint(&b.owned));

    let kept = a.owned.clone();
    let left = b.leave();
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let answer = a.beat();
    assert_eq!(a.epoch, 3);
    assert_eq!(a.partitions(), vec![0, 1, 2, 3, 4, 5], "{answer:?}");
    assert!(a.owned.is_superset(&kept));
    // Without owned partitions and nothing changed: no assignment in the answer.
    let r = a.request();
    let answer = a.call(&r);
    assert_eq!((answer.error_code, answer.assignment), (0, None));
    stop(log, server);
}

/// What does not fit is refused as Kafka refuses it.
#[test]
fn heartbeats_that_do_not_fit_are_refused() {
    let dir = test_dir("consumer-groups-refused");
    let (log, server) = serve(dir.path(), |c| {
        c.groups.initial_rebalance_delay = Duration::ZERO;
    });
    log.create_topic("orders", TopicConfig::new(2)).unwrap();
    let addr = server.local_addr();
    let mut m = Member::new(addr, "g", "m1");
    let invalid = code(ResponseError::InvalidRequest);
    let refused = |m: &mut Member, tweak: &dyn Fn(&mut ConsumerGroupHeartbeatRequest)| -> i16 {
        let mut r = m.request();
        r.member_epoch = 0;
        r.rebalance_timeout_ms = 1000;
        r.subscribed_topic_names = Some(vec![name("orders")]);
        r.topic_partitions = Some(Vec::new());
        tweak(&mut r);
        let answer = m.call(&r);
        assert!(answer.error_message.is_some() || answer.error_code == 0);
        answer.error_code
    };
    assert_eq!(refused(&mut m, &|r| r.group_id = GroupId(s(""))), invalid);
    assert_eq!(refused(&mut m, &|r| r.rebalance_timeout_ms = -1), invalid);
    assert_eq!(
        refused(&mut m, &|r| r.subscribed_topic_names = None),
        invalid
    );
    assert_eq!(refused(&mut m, &|r| r.member_id = s("")), invalid);
    assert_eq!(refused(&mut m, &|r| r.instance_id = Some(s(""))), invalid);
    assert_eq!(
        refused(&mut m, &|r| r.topic_partitions =
            Some(owned_by_topic(&[(Uuid::from_u128(1), 0)].into()))),
        invalid
    );
    assert_eq!(refused(&mut m, &|r| r.member_epoch = -3), invalid);
    assert_eq!(
        refused(&mut m, &|r| r.member_epoch = -2),
        invalid,
        "without an instance id"
    );
    assert_eq!(
        refused(&mut m, &|r| r.subscribed_topic_regex = Some(s("orders("))),
        code(ResponseError::InvalidRegularExpression)
    );
    assert_eq!(
        refused(&mut m, &|r| r.server_assignor = Some(s("sticky"))),
        code(ResponseError::UnsupportedAssignor)
    );
    assert_eq!(
        refused(&mut m, &|r| r.group_id = GroupId(s(&"g".repeat(40_000)))),
        code(ResponseError::InvalidGroupId)
    );
    // An unknown member, and epochs that are not the member's.
    let mut r = m.request();
    r.member_epoch = 4;
    assert_eq!(m.call(&r).error_code, code(ResponseError::UnknownMemberId));
    m.join(&["orders"]);
    r.member_epoch = m.epoch + 1;
    assert_eq!(
        m.call(&r).error_code,
        code(ResponseError::FencedMemberEpoch)
    );
    // Fenced, it joins again with epoch 0 and its own id.
    m.join(&["orders"]);
    assert_eq!(m.owned.len(), 2);

    // The two protocols do not mix in one group.
    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(s("g"));
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = s("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = bytes::Bytes::from_static(b"meta");
    join.protocols = vec![p].into_iter().collect();
    let mut classic = Client::connect(addr);
    let joined: JoinGroupResponse = classic.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(
        joined.error_code,
        code(ResponseError::InconsistentGroupProtocol)
    );
    join.group_id = GroupId(s("classic"));
    let joined: JoinGroupResponse = classic.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(joined.error_code, code(ResponseError::MemberIdRequired));
    join.member_id = joined.member_id;
    let joined: JoinGroupResponse = classic.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(joined.error_code, 0);
    let mut other = Member::new(addr, "classic", "m2");
    let mut r = other.request();
    r.rebalance_timeout_ms = 1000;
    r.subscribed_topic_names = Some(vec![name("orders")]);
    r.topic_partitions = Some(Vec::new());
    assert_eq!(
        other.call(&r).error_code,
        code(ResponseError::GroupIdNotFound)
    );
    // ListGroups v5 tells them apart by type, though both have the protocol type "consumer".
    let mut list = ListGroupsRequest::default();
    list.types_filter = vec![s("classic")];
    let listed: ListGroupsResponse = classic.call(ApiKey::ListGroups, 5, &list);
    let kinds: Vec<(String, String, String)> = (listed.groups.iter())
        .map(|g| {
            let (id, kind) = (g.group_id.to_string(), g.group_type.to_string());
            (id, kind, g.protocol_type.to_string())
        })
        .collect();
    let classic_group = (
        "classic".to_owned(),
        "classic".to_owned(),
        "consumer".to_owned(),
    );
    assert_eq!(kinds, vec![classic_group]);
    stop(log, server);
}

fn commit(m: &mut Member, version: i16, epoch: i32, offset: i64) -> i16 {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = name("orders");
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = GroupId(s(&m.group));
    r.generation_id_or_member_epoch = epoch;
    r.member_id = s(&m.id);
    r.topics = vec![t];
    let response: OffsetCommitResponse = m.client.call(ApiKey::OffsetCommit, version, &r);
    response.topics[0].partitions[0].error_code
}

/// OffsetFetch v9 of partition 0 of "orders": (error, committed offset).
fn fetch_offset(m: &mut Member, member: Option<(&str, i32)>) -> (i16, i64) {
    let mut t = OffsetFetchRequestTopics::default();
    t.name = name("orders");
    t.partition_indexes = vec![0];
    let mut g = OffsetFetchRequestGroup::default();
    g.group_id = GroupId(s(&m.group));
    g.member_id = member.map(|(id, _)| s(id));
    g.member_epoch = member.map_or(-1, |(_, e)| e);
    g.topics = Some(vec![t]);
    let mut r = OffsetFetchRequest::default();
    r.groups = vec![g];
    let response: OffsetFetchResponse = m.client.call(ApiKey::OffsetFetch, 9, &r);
    let g = &response.groups[0];
    let offset = g
        .topics
        .first()
        .map_or(-1, |t| t.partitions[0].committed_offset);
    (g.error_code, offset)
}

/// Commits name the member's epoch (OffsetCommit v9): its own is accepted, as is its previous
/// one (a commit sent before it took its new epoch); others are stale; an unknown member and
/// older versions are refused. OffsetFetch v9 checks the same, and outsiders may fetch.
#[test]
fn commits_and_offset_fetches_are_checked_against_the_members_epoch() {
    let dir = test_dir("consumer-groups-commits");
    let (log, server) = serve(dir.path(), |_| {});
    log.create_topic("orders", TopicConfig::new(2)).unwrap();
    let addr = server.local_addr();
    let mut a = Member::new(addr, "g", "a");
    a.join(&["orders"]);
    let epoch = a.epoch;
    assert_eq!(commit(&mut a, 9, epoch, 5), 0);
    let mut b = Member::new(addr, "g", "b");
    b.join(&["orders"]);
    settle(&mut [&mut a, &mut b], 2);
    assert_eq!(a.epoch, 2);
    assert_eq!(commit(&mut a, 9, 2, 6), 0);
    assert_eq!(commit(&mut a, 9, 1, 7), 0, "its previous epoch");
    assert_eq!(
        commit(&mut a, 9, 3, 8),
        code(ResponseError::StaleMemberEpoch)
    );
    assert_eq!(
        commit(&mut a, 8, 2, 8),
        code(ResponseError::UnsupportedVersion)
    );
    let mut stranger = Member::new(addr, "g", "nobody");
    assert_eq!(
        commit(&mut stranger, 9, 2, 8),
        code(ResponseError::UnknownMemberId)
    );
    assert_eq!(
        commit(&mut stranger, 9, -1, 8),
        code(ResponseError::UnknownMemberId)
    );
    let stored = log.group_offsets("g");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].offset, floodgate::Offset(7));

    assert_eq!(fetch_offset(&mut a, Some(("a", 2))), (0, 7));
    assert_eq!(fetch_offset(&mut a, None), (0, 7), "from outside the group");
    let stale = fetch_offset(&mut a, Some(("a", 5))).0;
    assert_eq!(stale, code(ResponseError::StaleMemberEpoch));
    let unknown = fetch_offset(&mut a, Some(("nobody", 2))).0;
    assert_eq!(unknown, code(ResponseError::UnknownMemberId));
    stop(log, server);
}

/// ConsumerGroupDescribe shows the members, their assignments and targets by topic name;
/// DescribeGroups says the group is not a classic one; ListGroups v5 names its type and
/// state and filters by them; DeleteGroups refuses it while it has members.
#[test]
fn a_consumer_group_is_described_listed_and_kept_while_it_has_members() {
    let dir = test_dir("consumer-groups-describe");
    let (log, server) = serve(dir.path(), |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    log.create_topic("orders", TopicConfig::new(4)).unwrap();
    let addr = server.local_addr();
    let mut a = Member::new(addr, "g", "a");
    a.join(&["orders"]);
    let mut b = Member::new(addr, "g", "b");
    b.join(&["orders"]);
    // b has its epoch, a has not given anything up yet: the group reconciles.
    let mut admin = Client::connect(addr);
    let mut r = ConsumerGroupDescribeRequest::default();
    r.group_ids = vec![GroupId(s("g")), GroupId(s("missing"))];
    let described: ConsumerGroupDescribeResponse = admin.call(ApiKey::ConsumerGroupDescribe, 1, &r);
    let g = &described.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str()), (0, "Reconciling"));
    assert_eq!((g.group_epoch, g.assignment_epoch), (2, 2));
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(
        described.groups[1].error_code,
        code(ResponseError::GroupIdNotFound)
    );
    let member_a = g
        .members
        .iter()
        .find(|m| m.member_id.as_str() == "a")
        .unwrap();
    assert_eq!(member_a.member_epoch, 1);
    assert_eq!(member_a.client_id.as_str(), "floodgate-test");
    assert_eq!(member_a.subscribed_topic_names, vec![name("orders")]);
    let count = |a: &kafka_protocol::messages::consumer_group_describe_response::Assignment| {
        (a.topic_partitions.iter())
            .map(|t| t.partitions.len())
            .sum::<usize>()
    };
    assert_eq!(count(&member_a.assignment), 4);
    assert_eq!(count(&member_a.target_assignment), 2);
    assert_eq!(
        member_a.assignment.topic_partitions[0].topic_name,
        name("orders")
    );
    assert_eq!(member_a.member_type, 1);

    settle(&mut [&mut a, &mut b], 4);
    // `/metrics` counts its members.
    let metrics = {
        use std::io::{Read, Write};
        let mut http = std::net::TcpStream::connect(server.metrics_addr().unwrap()).unwrap();
        write!(http, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).unwrap();
        text
    };
    assert!(
        metrics.contains("floodgate_group_members{group=\"g\"} 2\n"),
        "{metrics}"
    );
    let described: ConsumerGroupDescribeResponse = admin.call(ApiKey::ConsumerGroupDescribe, 1, &r);
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");

    let mut d = DescribeGroupsRequest::default();
    d.groups = vec![GroupId(s("g"))];
    let classic: DescribeGroupsResponse = admin.call(ApiKey::DescribeGroups, 5, &d);
    assert_eq!(
        classic.groups[0].error_code,
        code(ResponseError::GroupIdNotFound)
    );

    let list = |admin: &mut Client, types: &[&str]| -> Vec<(String, String, String)> {
        let mut r = ListGroupsRequest::default();
        r.types_filter = types.iter().map(|t| s(t)).collect();
        let listed: ListGroupsResponse = admin.call(ApiKey::ListGroups, 5, &r);
        (listed.groups.iter())
            .map(|g| {
                (
                    g.group_id.to_string(),
                    g.group_type.to_string(),
                    g.group_state.to_string(),
                )
            })
            .collect()
    };
    let consumer = ("g".to_owned(), "consumer".to_owned(), "Stable".to_owned());
    assert_eq!(list(&mut admin, &[]), vec![consumer.clone()]);
    assert_eq!(list(&mut admin, &["Consumer"]), vec![consumer]);
    assert!(list(&mut admin, &["classic"]).is_empty());

    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![GroupId(s("g"))];
    let deleted: DeleteGroupsResponse = admin.call(ApiKey::DeleteGroups, 2, &del);
    assert_eq!(
        deleted.results[0].error_code,
        code(ResponseError::NonEmptyGroup)
    );
    a.leave();
    b.leave();
    assert!(
        list(&mut admin, &[]).is_empty(),
        "no members and no offsets"
    );
    stop(log, server);
}

/// A member that stops heartbeating is removed when the server's session timeout runs out,
/// and the others take its partitions.
#[test]
fn a_silent_member_is_removed_when_its_session_runs_out() {
    let dir = test_dir("consumer-groups-expiry");
    let (log, server) = serve(dir.path(), |c| {
        c.groups.consumer_session = Duration::from_millis(400);
    });
    log.create_topic("orders", TopicConfig::new(4)).unwrap();
    let addr = server.local_addr();
    let mut a = Member::new(addr, "g", "a");
    a.join(&["orders"]);
    let mut b = Member::new(addr, "g", "b");
    b.join(&["orders"]);
    settle(&mut [&mut a, &mut b], 4);
    // a goes on heartbeating; b falls silent.
    let started = Instant::now();
    while a.owned.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "b was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
        a.beat();
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut r = b.request();
    r.topic_partitions = Some(owned_by_topic(&b.owned));
    assert_eq!(b.call(&r).error_code, code(ResponseError::UnknownMemberId));
    stop(log, server);
}

/// Metadata v12 answers topics asked for by id (how clients name the topics of a
/// consumer-protocol assignment), and says which ids are unknown.
#[test]
fn metadata_answers_topics_asked_for_by_id() {
    let dir = test_dir("consumer-groups-metadata");
    let (log, server) = serve(dir.path(), |_| {});
    log.create_topic("orders", TopicConfig::new(3)).unwrap();
    let mut m = Member::new(server.local_addr(), "g", "a");
    m.join(&["orders"]);
    let id = m.owned.iter().next().unwrap().0;
    let mut known = MetadataRequestTopic::default();
    known.topic_id = id;
    known.name = None;
    let mut unknown = MetadataRequestTopic::default();
    unknown.name = None;
    unknown.topic_id = Uuid::from_u128(42);
    let mut r = MetadataRequest::default();
    r.topics = Some(vec![known, unknown]);
    let response: MetadataResponse = m.client.call(ApiKey::Metadata, 12, &r);
    assert_eq!(response.topics.len(), 2);
    assert_eq!(response.topics[0].name, Some(name("orders")));
    assert_eq!(
        (
            response.topics[0].topic_id,
            response.topics[0].partitions.len()
        ),
        (id, 3)
    );
    assert_eq!(
        response.topics[1].error_code,
        code(ResponseError::UnknownTopicId)
    );
    assert_eq!(response.topics[1].topic_id, Uuid::from_u128(42));
    stop(log, server);
}

/// A paced group paces its consumer-protocol members' fetches as it paces classic members'.
#[test]
fn a_paced_group_paces_its_consumer_protocol_members() {
    let dir = test_dir("consumer-groups-paced");
    let rate = floodgate::RateLimit {
        msgs_per_s: Some(2_000.0),
        bytes_per_s: None,
    };
    let (log, server) = serve(dir.path(), |c| {
        c.group_rates = vec![("paced".to_owned(), rate)];
    });
    log.create_topic("p", TopicConfig::new(2)).unwrap();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr);
    produce(&mut admin, "p", 2, 400, 10);
    let mut m = Member::new(addr, "paced", "a");
    m.join(&["p"]);
    assert_eq!(m.owned.len(), 2);
    let mut fetcher = Client::connect(addr);
    let mut next = [0i64; 2];
    let span = Duration::from_millis(1_000);
    let (received, elapsed) = fetch_for(&mut fetcher, "p", &mut next, span);
    let most = (2_000.0 * elapsed) as u64 + 20 + 2 * 10;
    assert!(
        received <= most,
        "{received} records in {elapsed:.2} s (at most {most})"
    );
    assert!(
        received >= 400,
        "the member is served: {received} in {elapsed:.2} s"
    );
    // Once it left, the same client's fetches are no longer the group's.
    m.leave();
    let before = received;
    let mut unpaced = 0;
    while unpaced == 0 || next.iter().sum::<i64>() < 8_000 {
        let got = fetch_records(&mut fetcher, "p", &mut next);
        assert!(got > 0);
        unpaced += got;
    }
    assert_eq!(before + unpaced, 8_000);
    stop(log, server);
}

/// A classic member of group `group` (JoinGroup in two steps, alone): its connection and id.
fn classic_join(addr: SocketAddr, group: &str) -> (Client, JoinGroupResponse) {
    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(s(group));
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = s("consumer");
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = bytes::Bytes::from_static(b"meta");
    join.protocols = vec![p].into_iter().collect();
    let mut client = Client::connect(addr);
    let first: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join);
    join.member_id = first.member_id;
    let joined: JoinGroupResponse = client.call(ApiKey::JoinGroup, 5, &join);
    assert_eq!(joined.error_code, 0);
    (client, joined)
}

/// A group moves from one protocol to the other once its members have left, and keeps its
/// committed offsets: classic members commit, consumer-protocol members start from there and
/// commit, and classic members come back to theirs.
#[test]
fn a_group_changes_protocol_when_empty_and_keeps_its_offsets() {
    use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
    let dir = test_dir("consumer-groups-switch");
    let (log, server) = serve(dir.path(), |c| {
        c.groups.initial_rebalance_delay = Duration::ZERO;
    });
    log.create_topic("orders", TopicConfig::new(2)).unwrap();
    let addr = server.local_addr();
    let leave = |client: &mut Client, member: &StrBytes| {
        let mut r = LeaveGroupRequest::default();
        r.group_id = GroupId(s("g"));
        r.member_id = member.clone();
        let left: LeaveGroupResponse = client.call(ApiKey::LeaveGroup, 2, &r);
        assert_eq!(left.error_code, 0);
    };
    let classic_commit = |client: &mut Client, joined: &JoinGroupResponse, offset: i64| -> i16 {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = offset;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = name("orders");
        t.partitions = vec![p];
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(s("g"));
        r.generation_id_or_member_epoch = joined.generation_id;
        r.member_id = joined.member_id.clone();
        r.topics = vec![t];
        let response: OffsetCommitResponse = client.call(ApiKey::OffsetCommit, 8, &r);
        response.topics[0].partitions[0].error_code
    };
    let (mut classic, joined) = classic_join(addr, "g");
    // Commits wait for the generation's SyncGroup (before it, REBALANCE_IN_PROGRESS).
    let mut sync = kafka_protocol::messages::SyncGroupRequest::default();
    sync.group_id = GroupId(s("g"));
    sync.generation_id = joined.generation_id;
    sync.member_id = joined.member_id.clone();
    let synced: kafka_protocol::messages::SyncGroupResponse =
        classic.call(ApiKey::SyncGroup, 3, &sync);
    assert_eq!(synced.error_code, 0);
    assert_eq!(classic_commit(&mut classic, &joined, 3), 0);
    // While it is there, the other protocol is refused.
    let mut m = Member::new(addr, "g", "m");
    let mut r = m.request();
    r.rebalance_timeout_ms = 1000;
    r.subscribed_topic_names = Some(vec![name("orders")]);
    r.topic_partitions = Some(Vec::new());
    assert_eq!(m.call(&r).error_code, code(ResponseError::GroupIdNotFound));
    leave(&mut classic, &joined.member_id);

    m.join(&["orders"]);
    assert_eq!(m.owned.len(), 2);
    let epoch = m.epoch;
    assert_eq!(fetch_offset(&mut m, Some(("m", epoch))), (0, 3));
    assert_eq!(commit(&mut m, 9, epoch, 4), 0);
    assert_eq!(m.leave().error_code, 0);

    let (classic, joined) = classic_join(addr, "g");
    assert_eq!(joined.generation_id, 1, "a classic group anew");
    assert_eq!(fetch_offset(&mut classic_member(classic), None), (0, 4));
    assert_eq!(log.group_offsets("g")[0].offset, floodgate::Offset(4));
    stop(log, server);
}

/// A member record around a connection, for [`fetch_offset`] from outside the group.
fn classic_member(client: Client) -> Member {
    Member {
        client,
        group: "g".to_owned(),
        id: String::new(),
        epoch: -1,
        owned: BTreeSet::new(),
    }
}
