//! Tests of the rewriting on replies captured from real redis-server 7.0 clusters.

use super::*;
use std::net::Ipv4Addr;

// Real replies of redis-server 7.0.15, captured byte for byte from two clusters on loopback
// (3 primaries + 3 replicas each, every node on its own 127.0.1.x address):
// - PLAIN_*: plaintext nodes 127.0.1.10-15, ports 26380-26385, announced host names
//   node0-5.example.internal;
// - TLS_*: TLS-only nodes (`port 0`, `tls-cluster yes`) 127.0.1.16-21, TLS ports 26386-26391,
//   asked over TLS;
// - TLSDUAL_* / PLAINDUAL_*: the same nodes once given plaintext ports 27386-27391 too,
//   asked over TLS / over plaintext;
// - HOST_*: `cluster-preferred-endpoint-type hostname`, node3 without a host name (`?`);
// - UNKNOWN_*: `cluster-preferred-endpoint-type unknown-endpoint`;
// - *_RESP3: the same connection after HELLO 3.
const PLAIN_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.10\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n$10\r\n127.0.1.13\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.11\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n$10\r\n127.0.1.14\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.12\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n$10\r\n127.0.1.15\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n*2\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
const PLAIN_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.13\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const PLAIN_NODES_RESP2: &[u8] = b"$895\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.1.12:26382@36382,node2.example.internal master - 0 1795625228000 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.1.10:26380@36380,node0.example.internal myself,master - 0 1795625229000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.1.15:26385@36385,node5.example.internal slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625228678 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.1.14:26384@36384,node4.example.internal slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625227000 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.1.11:26381@36381,node1.example.internal master - 0 1795625229681 2 connected 5461-10922\n\r\n";
const PLAIN_REPLICAS_RESP2: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
const PLAIN_SLAVES_RESP2: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
const PLAIN_MOVED: &[u8] = b"-MOVED 12182 127.0.1.12:26382\r\n";
const PLAIN_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.10\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n$10\r\n127.0.1.13\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.11\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n$10\r\n127.0.1.14\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.12\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n$10\r\n127.0.1.15\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
const PLAIN_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.13\r\n$8\r\nhostname\r\n$22\r\nnode3.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const PLAIN_NODES_RESP3: &[u8] = b"=899\r\ntxt:f5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.1.12:26382@36382,node2.example.internal master - 0 1795625228000 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.1.10:26380@36380,node0.example.internal myself,master - 0 1795625229000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.1.15:26385@36385,node5.example.internal slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625228678 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.1.14:26384@36384,node4.example.internal slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625227000 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.1.11:26381@36381,node1.example.internal master - 0 1795625229681 2 connected 5461-10922\n\r\n";
const PLAIN_REPLICAS_RESP3: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
const PLAIN_SLAVES_RESP3: &[u8] = b"*1\r\n$161\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383,node3.example.internal slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\r\n";
const TLS_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n*0\r\n*4\r\n$10\r\n127.0.1.19\r\n:26389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n*0\r\n*4\r\n$10\r\n127.0.1.20\r\n:26390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n*0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:26388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n*0\r\n*4\r\n$10\r\n127.0.1.21\r\n:26391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n*0\r\n";
const TLS_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const TLS_NODES_RESP2: &[u8] = b"$757\r\n806765d3364746224a4d35b9341174e2056c599d 127.0.1.20:26390@36390 slave 24c6fa51fbdd736db827bbd65a641afb0cf8f95d 0 1795625229000 5 connected\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e 127.0.1.21:26391@36391 slave 0dfed88e098dc58cf4bd606de8b00e911553f072 0 1795625229617 4 connected\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d 127.0.1.17:26387@36387 master - 0 1795625231637 5 connected 5461-10922\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\n0dfed88e098dc58cf4bd606de8b00e911553f072 127.0.1.18:26388@36388 master - 0 1795625230000 4 connected 10923-16383\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03 127.0.1.16:26386@36386 myself,master - 0 1795625227000 0 connected 0-5460\n\r\n";
const TLS_REPLICAS_RESP2: &[u8] = b"*1\r\n$138\r\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\r\n";
const TLS_MOVED: &[u8] = b"-MOVED 12182 127.0.1.18:26388\r\n";
const TLS_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n%0\r\n*4\r\n$10\r\n127.0.1.19\r\n:26389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n%0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n%0\r\n*4\r\n$10\r\n127.0.1.20\r\n:26390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n%0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:26388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n%0\r\n*4\r\n$10\r\n127.0.1.21\r\n:26391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n%0\r\n";
const TLS_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:14\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const TLS_NODES_RESP3: &[u8] = b"=761\r\ntxt:806765d3364746224a4d35b9341174e2056c599d 127.0.1.20:26390@36390 slave 24c6fa51fbdd736db827bbd65a641afb0cf8f95d 0 1795625229000 5 connected\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e 127.0.1.21:26391@36391 slave 0dfed88e098dc58cf4bd606de8b00e911553f072 0 1795625229617 4 connected\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d 127.0.1.17:26387@36387 master - 0 1795625231637 5 connected 5461-10922\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\n0dfed88e098dc58cf4bd606de8b00e911553f072 127.0.1.18:26388@36388 master - 0 1795625230000 4 connected 10923-16383\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03 127.0.1.16:26386@36386 myself,master - 0 1795625227000 0 connected 0-5460\n\r\n";
const TLS_REPLICAS_RESP3: &[u8] = b"*1\r\n$138\r\n28346d739184cd000679d9ef652bf5eabda1a21f 127.0.1.19:26389@36389 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected\r\n";
const TLSDUAL_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$4\r\nport\r\n:27390\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$4\r\nport\r\n:27388\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$4\r\nport\r\n:27391\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$4\r\nport\r\n:27389\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const TLSDUAL_MOVED: &[u8] = b"-MOVED 12182 127.0.1.18:26388\r\n";
const TLSDUAL_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$8\r\ntls-port\r\n:26387\r\n$2\r\nip\r\n$10\r\n127.0.1.17\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.17\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$4\r\nport\r\n:27390\r\n$8\r\ntls-port\r\n:26390\r\n$2\r\nip\r\n$10\r\n127.0.1.20\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.20\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n$4\r\nport\r\n:27388\r\n$8\r\ntls-port\r\n:26388\r\n$2\r\nip\r\n$10\r\n127.0.1.18\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.18\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n$4\r\nport\r\n:27391\r\n$8\r\ntls-port\r\n:26391\r\n$2\r\nip\r\n$10\r\n127.0.1.21\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.21\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n$8\r\ntls-port\r\n:26386\r\n$2\r\nip\r\n$10\r\n127.0.1.16\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.16\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n$4\r\nport\r\n:27389\r\n$8\r\ntls-port\r\n:26389\r\n$2\r\nip\r\n$10\r\n127.0.1.19\r\n$8\r\nendpoint\r\n$10\r\n127.0.1.19\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:28\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const PLAINDUAL_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n*0\r\n*4\r\n$10\r\n127.0.1.19\r\n:27389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n*0\r\n*4\r\n$10\r\n127.0.1.20\r\n:27390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n*0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:27388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n*0\r\n*4\r\n$10\r\n127.0.1.21\r\n:27391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n*0\r\n";
const PLAINDUAL_MOVED: &[u8] = b"-MOVED 12182 127.0.1.18:27388\r\n";
const PLAINDUAL_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$10\r\n127.0.1.16\r\n:26386\r\n$40\r\ndd046f3d1dc6b385d3b2c45a7f45967189d68d03\r\n%0\r\n*4\r\n$10\r\n127.0.1.19\r\n:27389\r\n$40\r\n28346d739184cd000679d9ef652bf5eabda1a21f\r\n%0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$10\r\n127.0.1.17\r\n:26387\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n%0\r\n*4\r\n$10\r\n127.0.1.20\r\n:27390\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n%0\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$10\r\n127.0.1.18\r\n:27388\r\n$40\r\n0dfed88e098dc58cf4bd606de8b00e911553f072\r\n%0\r\n*4\r\n$10\r\n127.0.1.21\r\n:27391\r\n$40\r\n4864d0ed4d4a9407a5aa97d3fcb76694c7f8396e\r\n%0\r\n";
const HOST_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$22\r\nnode0.example.internal\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n*4\r\n$1\r\n?\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$22\r\nnode1.example.internal\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n*4\r\n$22\r\nnode4.example.internal\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$22\r\nnode2.example.internal\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n*4\r\n$22\r\nnode5.example.internal\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n";
const HOST_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$22\r\nnode2.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$22\r\nnode5.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$22\r\nnode0.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$22\r\nnode1.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$22\r\nnode4.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const HOST_MOVED: &[u8] = b"-MOVED 12182 node2.example.internal:26382\r\n";
const HOST_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$22\r\nnode0.example.internal\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n*4\r\n$1\r\n?\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$22\r\nnode1.example.internal\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n*4\r\n$22\r\nnode4.example.internal\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$22\r\nnode2.example.internal\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n*4\r\n$22\r\nnode5.example.internal\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n";
const HOST_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$22\r\nnode2.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$22\r\nnode5.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$22\r\nnode0.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$22\r\nnode1.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$22\r\nnode4.example.internal\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const UNKNOWN_SLOTS_RESP2: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$-1\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n$-1\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$-1\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n$-1\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n$-1\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n$-1\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n*4\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
const UNKNOWN_SHARDS_RESP2: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*16\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*16\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const UNKNOWN_MOVED: &[u8] = b"-MOVED 12182 :26382\r\n";
const UNKNOWN_SLOTS_RESP3: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n_\r\n:26380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n*4\r\n_\r\n:26383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%1\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n_\r\n:26381\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n*4\r\n_\r\n:26384\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n*4\r\n:10923\r\n:16383\r\n*4\r\n_\r\n:26382\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n*4\r\n_\r\n:26385\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n%2\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n";
const UNKNOWN_SHARDS_RESP3: &[u8] = b"*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:26382\r\n$2\r\nip\r\n$10\r\n127.0.1.12\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode2.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\n21d56cfa270cd035565d1930803db3a84b5293cb\r\n$4\r\nport\r\n:26385\r\n$2\r\nip\r\n$10\r\n127.0.1.15\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode5.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n$4\r\nport\r\n:26380\r\n$2\r\nip\r\n$10\r\n127.0.1.10\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode0.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%7\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:26383\r\n$2\r\nip\r\n$10\r\n127.0.1.13\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%8\r\n$2\r\nid\r\n$40\r\n0fb5c510b340d298a89190f5e7f3de0df38d7beb\r\n$4\r\nport\r\n:26381\r\n$2\r\nip\r\n$10\r\n127.0.1.11\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode1.example.internal\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n%8\r\n$2\r\nid\r\n$40\r\nb677346c144d5adeffb06b51e44c9c0a6eda10b1\r\n$4\r\nport\r\n:26384\r\n$2\r\nip\r\n$10\r\n127.0.1.14\r\n$8\r\nendpoint\r\n$0\r\n\r\n$8\r\nhostname\r\n$22\r\nnode4.example.internal\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:56\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
const ASK: &[u8] = b"-ASK 12182 127.0.1.10:26380\r\n";
const EXEC_MOVED: &[u8] = b"-MOVED 12182 127.0.1.10:26380\r\n";
const PLAIN_NODES_HANDSHAKE_RESP2: &[u8] = b"$967\r\n78d4e487c73413561ebf56567193be71d073aae0 127.0.1.30:26399@36399 handshake - 0 0 0 disconnected\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.1.13:26383@36383 slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625286132 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.1.12:26382@36382,node2.example.internal master - 0 1795625285122 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.1.10:26380@36380,node0.example.internal myself,master - 0 1795625283000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.1.15:26385@36385,node5.example.internal slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625283000 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.1.14:26384@36384,node4.example.internal slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625283108 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.1.11:26381@36381,node1.example.internal master - 0 1795625284000 2 connected 5461-10922\n\r\n";

/// Every real node name, with its real ports, maps to 127.0.0.1:7xxx (xxx: the last three
/// digits of the port). The handshake node of PLAIN_NODES_HANDSHAKE (port 26399) is unknown.
fn local(endpoint: &str, port: u16) -> Option<SocketAddr> {
    let known_name = endpoint.is_empty()
        || endpoint.starts_with("127.0.1.")
        || endpoint.ends_with(".example.internal");
    let known_port = (26380..=26391).contains(&port) || (27386..=27391).contains(&port);
    (known_name && known_port).then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 7000 + port % 1000)))
}

fn nothing(_: &str, _: u16) -> Option<SocketAddr> {
    None
}

fn blob_err(s: &str) -> Vec<u8> {
    format!("!{}\r\n{s}\r\n", s.len()).into_bytes()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn moved_and_ask_simple_errors() {
    let cases: &[(&[u8], &[u8])] = &[
        (PLAIN_MOVED, b"-MOVED 12182 127.0.0.1:7382\r\n"),
        (TLS_MOVED, b"-MOVED 12182 127.0.0.1:7388\r\n"),
        (TLSDUAL_MOVED, b"-MOVED 12182 127.0.0.1:7388\r\n"),
        (PLAINDUAL_MOVED, b"-MOVED 12182 127.0.0.1:7388\r\n"),
        (HOST_MOVED, b"-MOVED 12182 127.0.0.1:7382\r\n"),
        // unknown-endpoint: "the host you are connected to" becomes an explicit address.
        (UNKNOWN_MOVED, b"-MOVED 12182 127.0.0.1:7382\r\n"),
        (ASK, b"-ASK 12182 127.0.0.1:7380\r\n"),
        (EXEC_MOVED, b"-MOVED 12182 127.0.0.1:7380\r\n"),
    ];
    for (input, want) in cases {
        assert!(may_redirect(input), "{}", text(input));
        let got = rewrite_redirects(input, &local).unwrap().unwrap();
        assert_eq!(text(&got), text(want));
    }
}

#[test]
fn ipv6_local_address_is_written_like_redis() {
    let v6 = |_: &str, _: u16| Some("[::1]:7002".parse().unwrap());
    let got = rewrite_redirects(PLAIN_MOVED, &v6).unwrap().unwrap();
    assert_eq!(got, b"-MOVED 12182 ::1:7002\r\n");
    // And an IPv6 node address is split at its last colon.
    let seen = std::cell::RefCell::new(Vec::new());
    let rec = |e: &str, p: u16| {
        seen.borrow_mut().push((e.to_string(), p));
        local("", 26380)
    };
    rewrite_redirects(b"-ASK 1 fd00::5:15001\r\n", &rec).unwrap();
    assert_eq!(seen.borrow()[0], ("fd00::5".to_string(), 15001));
}

#[test]
fn blob_error_gets_its_length_recomputed() {
    let input = blob_err("MOVED 12182 127.0.1.12:26382");
    assert_eq!(text(&input), "!28\r\nMOVED 12182 127.0.1.12:26382\r\n");
    assert!(may_redirect(&input));
    let got = rewrite_redirects(&input, &local).unwrap().unwrap();
    assert_eq!(got, blob_err("MOVED 12182 127.0.0.1:7382"));
    assert_eq!(text(&got), "!26\r\nMOVED 12182 127.0.0.1:7382\r\n");
    assert!(!may_redirect(b"!3\r\nERR\r\n"));
    assert_eq!(rewrite_redirects(b"!3\r\nERR\r\n", &local).unwrap(), None);
}

#[test]
fn nested_redirects_in_exec_maps_attributes_and_pushes() {
    // An EXEC reply: a MOVED and an ASK among other replies, and a bulk string that merely
    // contains the text, which must stay as it is.
    let input = [
        &b"*5\r\n+OK\r\n-MOVED 12182 127.0.1.12:26382\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n*2\r\n:1\r\n"
            [..],
        &blob_err("ASK 7 127.0.1.10:26380 "),
        b"+MOVED 1 1.2.3.4:5\r\n",
    ]
    .concat();
    // The blob error above has a trailing space: its address does not parse.
    assert!(matches!(
        rewrite_redirects(&input, &local),
        Err(RewriteError::Malformed(_))
    ));
    let input = [
        &b"*5\r\n+OK\r\n-MOVED 12182 127.0.1.12:26382\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n*2\r\n:1\r\n"
            [..],
        &blob_err("ASK 7 127.0.1.10:26380"),
        b"+MOVED 1 1.2.3.4:5\r\n",
    ]
    .concat();
    let got = rewrite_redirects(&input, &local).unwrap().unwrap();
    let want = [
        &b"*5\r\n+OK\r\n-MOVED 12182 127.0.0.1:7382\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n*2\r\n:1\r\n"[..],
        &blob_err("ASK 7 127.0.0.1:7380"),
        b"+MOVED 1 1.2.3.4:5\r\n",
    ]
    .concat();
    assert_eq!(text(&got), text(&want));
    let input: &[u8] = b"|1\r\n+k\r\n-ASK 1 127.0.1.11:26381\r\n%1\r\n-MOVED 2 127.0.1.11:26381\r\n~1\r\n-ASK 3 127.0.1.11:26381\r\n";
    let wrapped = [b">2\r\n".as_slice(), input, b"_\r\n"].concat();
    let got = rewrite_redirects(&wrapped, &local).unwrap().unwrap();
    assert_eq!(
        text(&got),
        ">2\r\n|1\r\n+k\r\n-ASK 1 127.0.0.1:7381\r\n%1\r\n-MOVED 2 127.0.0.1:7381\r\n~1\r\n-ASK 3 127.0.0.1:7381\r\n_\r\n"
    );
}

#[test]
fn text_that_only_looks_like_a_redirect_is_left_alone() {
    for input in [
        &b"$17\r\nMOVED 1 1.2.3.4:5\r\n"[..],
        b"+MOVED 1 1.2.3.4:5\r\n",
        b"*1\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n",
        b"=21\r\ntxt:MOVED 1 1.2.3.4:5\r\n",
        b"-ERR unknown command 'MOVED'\r\n",
        b"-MOVEDX 1 1.2.3.4:5\r\n",
        b"-ASK 1 ?:26383\r\n",
        b"*-1\r\n",
        b"$-1\r\n",
        b"*0\r\n",
    ] {
        assert_eq!(
            rewrite_redirects(input, &local).unwrap(),
            None,
            "{}",
            text(input)
        );
    }
    assert!(!may_redirect(b"$17\r\nMOVED 1 1.2.3.4:5\r\n"));
    assert!(!may_redirect(b"+MOVED 1 1.2.3.4:5\r\n"));
    assert!(!may_redirect(b"-ERR x\r\n"));
    assert!(!may_redirect(b"*2\r\n$1\r\na\r\n:1\r\n"));
    assert!(!may_redirect(b""));
    // A false positive is allowed: the rewrite then finds nothing.
    assert!(may_redirect(b"*1\r\n$17\r\nMOVED 1 1.2.3.4:5\r\n"));
}

#[test]
fn redirect_to_an_unknown_node_is_an_error() {
    let e = rewrite_redirects(PLAIN_MOVED, &nothing).unwrap_err();
    assert_eq!(
        e,
        RewriteError::NoLocalPort {
            endpoint: "127.0.1.12".into(),
            port: 26382
        }
    );
    // The message a client may see names no address.
    assert!(!e.to_string().contains("127.0.1"), "{e}");
    let nested = [&b"*2\r\n+OK\r\n"[..], &blob_err("MOVED 1 10.9.8.7:15001")].concat();
    assert!(rewrite_redirects(&nested, &nothing).is_err());
    assert!(rewrite_redirects(b"*1\r\n-ASK 1 10.0.0.1:6379\r\n", &nothing).is_err());
}

const TOPOLOGY_FIXTURES: &[(Topology, &str, &[u8])] = &[
    (Topology::Slots, "PLAIN_SLOTS_RESP2", PLAIN_SLOTS_RESP2),
    (Topology::Slots, "PLAIN_SLOTS_RESP3", PLAIN_SLOTS_RESP3),
    (Topology::Slots, "TLS_SLOTS_RESP2", TLS_SLOTS_RESP2),
    (Topology::Slots, "TLS_SLOTS_RESP3", TLS_SLOTS_RESP3),
    (
        Topology::Slots,
        "PLAINDUAL_SLOTS_RESP2",
        PLAINDUAL_SLOTS_RESP2,
    ),
    (
        Topology::Slots,
        "PLAINDUAL_SLOTS_RESP3",
        PLAINDUAL_SLOTS_RESP3,
    ),
    (Topology::Slots, "HOST_SLOTS_RESP2", HOST_SLOTS_RESP2),
    (Topology::Slots, "HOST_SLOTS_RESP3", HOST_SLOTS_RESP3),
    (Topology::Slots, "UNKNOWN_SLOTS_RESP2", UNKNOWN_SLOTS_RESP2),
    (Topology::Slots, "UNKNOWN_SLOTS_RESP3", UNKNOWN_SLOTS_RESP3),
    (Topology::Shards, "PLAIN_SHARDS_RESP2", PLAIN_SHARDS_RESP2),
    (Topology::Shards, "PLAIN_SHARDS_RESP3", PLAIN_SHARDS_RESP3),
    (Topology::Shards, "TLS_SHARDS_RESP2", TLS_SHARDS_RESP2),
    (Topology::Shards, "TLS_SHARDS_RESP3", TLS_SHARDS_RESP3),
    (
        Topology::Shards,
        "TLSDUAL_SHARDS_RESP2",
        TLSDUAL_SHARDS_RESP2,
    ),
    (
        Topology::Shards,
        "TLSDUAL_SHARDS_RESP3",
        TLSDUAL_SHARDS_RESP3,
    ),
    (Topology::Shards, "HOST_SHARDS_RESP2", HOST_SHARDS_RESP2),
    (Topology::Shards, "HOST_SHARDS_RESP3", HOST_SHARDS_RESP3),
    (
        Topology::Shards,
        "UNKNOWN_SHARDS_RESP2",
        UNKNOWN_SHARDS_RESP2,
    ),
    (
        Topology::Shards,
        "UNKNOWN_SHARDS_RESP3",
        UNKNOWN_SHARDS_RESP3,
    ),
    (Topology::Nodes, "PLAIN_NODES_RESP2", PLAIN_NODES_RESP2),
    (Topology::Nodes, "PLAIN_NODES_RESP3", PLAIN_NODES_RESP3),
    (Topology::Nodes, "TLS_NODES_RESP2", TLS_NODES_RESP2),
    (Topology::Nodes, "TLS_NODES_RESP3", TLS_NODES_RESP3),
    (
        Topology::Nodes,
        "PLAIN_NODES_HANDSHAKE_RESP2",
        PLAIN_NODES_HANDSHAKE_RESP2,
    ),
    (
        Topology::Replicas,
        "PLAIN_REPLICAS_RESP2",
        PLAIN_REPLICAS_RESP2,
    ),
    (
        Topology::Replicas,
        "PLAIN_REPLICAS_RESP3",
        PLAIN_REPLICAS_RESP3,
    ),
    (Topology::Replicas, "PLAIN_SLAVES_RESP2", PLAIN_SLAVES_RESP2),
    (Topology::Replicas, "PLAIN_SLAVES_RESP3", PLAIN_SLAVES_RESP3),
    (Topology::Replicas, "TLS_REPLICAS_RESP2", TLS_REPLICAS_RESP2),
    (Topology::Replicas, "TLS_REPLICAS_RESP3", TLS_REPLICAS_RESP3),
];

/// A decoded reply, the same for RESP2 and RESP3, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum T {
    Str(String),
    Int(i64),
    Null,
    List(Vec<T>),
    Pairs(Vec<(T, T)>),
    Other(String),
}

fn decode(frame: &[u8], resp3: bool) -> T {
    if resp3 {
        use redis_protocol::resp3::types::OwnedFrame as F;
        fn conv(f: F) -> T {
            match f {
                F::BlobString { data, .. }
                | F::SimpleString { data, .. }
                | F::VerbatimString { data, .. } => T::Str(String::from_utf8(data).unwrap()),
                F::Number { data, .. } => T::Int(data),
                F::Null => T::Null,
                F::Array { data, .. } => T::List(data.into_iter().map(conv).collect()),
                F::Map { data, .. } => {
                    let mut p: Vec<(T, T)> =
                        data.into_iter().map(|(k, v)| (conv(k), conv(v))).collect();
                    p.sort();
                    T::Pairs(p)
                }
                other => T::Other(format!("{other:?}")),
            }
        }
        let (f, n) = redis_protocol::resp3::decode::complete::decode(frame)
            .unwrap()
            .unwrap();
        assert_eq!(n, frame.len(), "one whole frame");
        conv(f)
    } else {
        use redis_protocol::resp2::types::OwnedFrame as F;
        fn conv(f: F) -> T {
            match f {
                F::BulkString(d) | F::SimpleString(d) => T::Str(String::from_utf8(d).unwrap()),
                F::Integer(i) => T::Int(i),
                F::Null => T::Null,
                F::Array(a) => T::List(a.into_iter().map(conv).collect()),
                F::Error(e) => T::Other(e),
            }
        }
        let (f, n) = redis_protocol::resp2::decode::decode(frame)
            .unwrap()
            .unwrap();
        assert_eq!(n, frame.len(), "one whole frame");
        conv(f)
    }
}

fn is_original_port(n: i64) -> bool {
    (26380..=26399).contains(&n) || (27386..=27391).contains(&n) || (36380..=36399).contains(&n)
}

/// No node address, host name or port of the real clusters is left anywhere.
fn assert_no_original_address(t: &T, name: &str) {
    match t {
        T::Str(s) => {
            assert!(!s.contains("127.0.1."), "{name}: address left in {s:?}");
            assert!(
                !s.contains("example.internal"),
                "{name}: host name in {s:?}"
            );
            for p in (26380..=26399).chain(27386..=27391).chain(36380..=36399) {
                assert!(!s.contains(&format!(":{p}")), "{name}: port {p} in {s:?}");
            }
        }
        T::Int(n) => assert!(!is_original_port(*n), "{name}: port {n} left"),
        T::List(items) => items
            .iter()
            .for_each(|i| assert_no_original_address(i, name)),
        T::Pairs(p) => p.iter().for_each(|(k, v)| {
            assert_no_original_address(k, name);
            assert_no_original_address(v, name);
        }),
        T::Null | T::Other(_) => {}
    }
}

const PAIR_KEYS: &[&str] = &[
    "id",
    "port",
    "tls-port",
    "ip",
    "endpoint",
    "hostname",
    "role",
    "replication-offset",
    "health",
    "slots",
    "nodes",
];

/// Replaces every address, host name and port by a placeholder, and drops what the rewrite
/// is meant to drop (host names, `tls-port`), so that an original and its rewrite compare
/// equal when nothing but addresses changed.
fn normalize(t: &T) -> T {
    let addr = |s: &str| {
        s.is_empty() || s.parse::<std::net::IpAddr>().is_ok() || s.ends_with(".example.internal")
    };
    match t {
        T::Str(s) if addr(s) => T::Str("ADDR".into()),
        T::Str(s) => T::Str(
            s.split('\n')
                .map(|line| {
                    let mut f: Vec<&str> = line.split(' ').collect();
                    if f.len() >= 8 && f[1].contains(':') {
                        f[1] = "ADDR";
                    }
                    f.join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        T::Null => T::Str("ADDR".into()),
        T::Int(n) if is_original_port(*n) || (7000..8000).contains(n) => T::Str("PORT".into()),
        T::List(items)
            if !items.is_empty()
                && items.len() % 2 == 0
                && items
                    .iter()
                    .step_by(2)
                    .all(|k| matches!(k, T::Str(s) if PAIR_KEYS.contains(&s.as_str()))) =>
        {
            normalize(&T::Pairs(
                items
                    .chunks(2)
                    .map(|c| (c[0].clone(), c[1].clone()))
                    .collect(),
            ))
        }
        // An empty RESP2 metadata array, or one whose only pair was dropped.
        T::List(items) if items.is_empty() => T::Pairs(Vec::new()),
        T::List(items) => T::List(items.iter().map(normalize).collect()),
        T::Pairs(p) => {
            let has_port = p.iter().any(|(k, _)| *k == T::Str("port".into()));
            let mut out: Vec<(T, T)> = p
                .iter()
                .filter_map(|(k, v)| match k {
                    T::Str(s) if s == "hostname" => None,
                    T::Str(s) if s == "tls-port" && has_port => None,
                    T::Str(s) if s == "tls-port" => Some((T::Str("port".into()), normalize(v))),
                    _ => Some((k.clone(), normalize(v))),
                })
                .collect();
            out.sort();
            T::Pairs(out)
        }
        other => other.clone(),
    }
}

#[test]
fn real_topology_replies_keep_their_structure_and_lose_every_address() {
    for &(which, name, frame) in TOPOLOGY_FIXTURES {
        let resp3 = name.ends_with("RESP3");
        let out =
            rewrite_topology(which, frame, &local).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let before = decode(frame, resp3);
        let after = decode(&out, resp3);
        assert_eq!(frame[0], out[0], "{name}: same frame type");
        assert_no_original_address(&after, name);
        assert_eq!(normalize(&before), normalize(&after), "{name}");
        // Nothing to rewrite twice: the output is stable.
        let again = rewrite_topology(which, &out, &|_: &str, p: u16| {
            Some(SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
        })
        .unwrap();
        assert_eq!(text(&again), text(&out), "{name}: not idempotent");
        let raw = text(&out);
        assert!(!raw.contains("tls-port"), "{name}");
        assert!(!raw.contains("hostname"), "{name}");
    }
}

#[test]
fn slots_exact_output() {
    let out = rewrite_topology(Topology::Slots, PLAIN_SLOTS_RESP3, &local).unwrap();
    let first_range = "*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%0\r\n*4\r\n$9\r\n127.0.0.1\r\n:7383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n%0\r\n*4\r\n";
    assert!(text(&out).starts_with(first_range), "{}", text(&out));
    // Host names preferred, node3 without one: `?` stays, its ip metadata is rewritten.
    let out = rewrite_topology(Topology::Slots, HOST_SLOTS_RESP2, &local).unwrap();
    assert!(text(&out).starts_with("*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n*4\r\n$1\r\n?\r\n:7383\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n*2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{}", text(&out));
    // unknown-endpoint: the null endpoint becomes the local IP, in both protocols.
    let out = rewrite_topology(Topology::Slots, UNKNOWN_SLOTS_RESP3, &local).unwrap();
    assert!(text(&out).starts_with("*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:7380\r\n$40\r\n1c041463347a9b45c410d53f93dd8786a134a4bd\r\n%1\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{}", text(&out));
}

#[test]
fn shards_exact_output() {
    // TLS-only node: `tls-port` becomes `port`, looked up by the TLS port.
    let out = rewrite_topology(Topology::Shards, TLS_SHARDS_RESP3, &local).unwrap();
    assert!(text(&out).starts_with("*3\r\n%2\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n24c6fa51fbdd736db827bbd65a641afb0cf8f95d\r\n$4\r\nport\r\n:7387\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"), "{}", text(&out));
    // Both ports: one `port`, the TLS port's listener; RESP2 flat array shrinks by 2.
    let out = rewrite_topology(Topology::Shards, TLSDUAL_SHARDS_RESP2, &local).unwrap();
    assert!(text(&out).contains("*14\r\n$2\r\nid\r\n$40\r\n806765d3364746224a4d35b9341174e2056c599d\r\n$4\r\nport\r\n:7390\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n"), "{}", text(&out));
    // Plaintext node with host name: *16 -> *14 (hostname dropped).
    let out = rewrite_topology(Topology::Shards, PLAIN_SHARDS_RESP2, &local).unwrap();
    assert!(text(&out).contains("*14\r\n$2\r\nid\r\n$40\r\na3fbb4da536f3a2e30fac8c5b76a003615074ede\r\n$4\r\nport\r\n:7382\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n"), "{}", text(&out));
    // Host names preferred, node3 without one: endpoint `?` stays, the rest is local.
    let out = rewrite_topology(Topology::Shards, HOST_SHARDS_RESP3, &local).unwrap();
    assert!(text(&out).contains("%7\r\n$2\r\nid\r\n$40\r\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62\r\n$4\r\nport\r\n:7383\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n"), "{}", text(&out));
}

#[test]
fn nodes_exact_output() {
    let out = rewrite_topology(Topology::Nodes, PLAIN_NODES_RESP3, &local).unwrap();
    let body = "txt:f5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.0.1:7383@0 slave 1c041463347a9b45c410d53f93dd8786a134a4bd 0 1795625227674 1 connected\na3fbb4da536f3a2e30fac8c5b76a003615074ede 127.0.0.1:7382@0 master - 0 1795625228000 3 connected 10923-16383\n1c041463347a9b45c410d53f93dd8786a134a4bd 127.0.0.1:7380@0 myself,master - 0 1795625229000 1 connected 0-5460\n21d56cfa270cd035565d1930803db3a84b5293cb 127.0.0.1:7385@0 slave a3fbb4da536f3a2e30fac8c5b76a003615074ede 0 1795625228678 3 connected\nb677346c144d5adeffb06b51e44c9c0a6eda10b1 127.0.0.1:7384@0 slave 0fb5c510b340d298a89190f5e7f3de0df38d7beb 0 1795625227000 2 connected\n0fb5c510b340d298a89190f5e7f3de0df38d7beb 127.0.0.1:7381@0 master - 0 1795625229681 2 connected 5461-10922\n";
    assert_eq!(text(&out), format!("={}\r\n{body}\r\n", body.len()));
    // A node in handshake with no local listener is shown without an address.
    let out = rewrite_topology(Topology::Nodes, PLAIN_NODES_HANDSHAKE_RESP2, &local).unwrap();
    assert!(text(&out).contains("\n78d4e487c73413561ebf56567193be71d073aae0 :0@0 handshake - 0 0 0 disconnected\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.0.1:7383@0 slave ") || text(&out).contains("\r\n78d4e487c73413561ebf56567193be71d073aae0 :0@0 handshake - 0 0 0 disconnected\nf5e6a630f1f28947b5dc86c8420d0f97cabedd62 127.0.0.1:7383@0 slave "), "{}", text(&out));
    // Nodes without an address stay as they are, but lose any host name.
    let noaddr = b"$60\r\n0123456789abcdef0123456789abcdef01234567 :0@0 master,noaddr\n\r\n";
    let out = rewrite_topology(Topology::Nodes, noaddr, &nothing).unwrap();
    assert_eq!(text(&out), text(noaddr));
    let line = "0123456789abcdef0123456789abcdef01234567 10.1.1.1:0@0,h.x master,noaddr\n";
    let named = format!("${}\r\n{line}\r\n", line.len());
    let out = rewrite_topology(Topology::Nodes, named.as_bytes(), &nothing).unwrap();
    assert_eq!(text(&out), text(noaddr));
    let out = rewrite_topology(Topology::Replicas, TLS_REPLICAS_RESP3, &local).unwrap();
    let line = "28346d739184cd000679d9ef652bf5eabda1a21f 127.0.0.1:7389@0 slave dd046f3d1dc6b385d3b2c45a7f45967189d68d03 0 1795625230632 0 connected";
    assert_eq!(text(&out), format!("*1\r\n${}\r\n{line}\r\n", line.len()));
}

#[test]
fn error_replies_pass_through() {
    let err = b"-ERR This instance has cluster support disabled\r\n";
    for which in [
        Topology::Slots,
        Topology::Shards,
        Topology::Nodes,
        Topology::Replicas,
    ] {
        assert_eq!(rewrite_topology(which, err, &nothing).unwrap(), err);
    }
    let unknown = b"-ERR Unknown node abc\r\n";
    assert_eq!(
        rewrite_topology(Topology::Replicas, unknown, &nothing).unwrap(),
        unknown
    );
}

#[test]
fn every_topology_reply_without_local_port_is_an_error() {
    for &(which, name, frame) in TOPOLOGY_FIXTURES {
        match rewrite_topology(which, frame, &nothing) {
            Err(RewriteError::NoLocalPort { endpoint, port }) => {
                assert!(!endpoint.is_empty() || port != 0, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn truncated_or_garbled_frames_are_errors_not_panics() {
    let mut all: Vec<(Option<Topology>, &[u8])> = TOPOLOGY_FIXTURES
        .iter()
        .map(|&(w, _, f)| (Some(w), f))
        .collect();
    for f in [PLAIN_MOVED, HOST_MOVED, UNKNOWN_MOVED, ASK] {
        all.push((None, f));
    }
    for (which, frame) in all {
        for end in 0..frame.len() {
            let cut = &frame[..end];
            if let Some(w) = which {
                assert!(rewrite_topology(w, cut, &local).is_err(), "{}", text(cut));
            }
            assert!(rewrite_redirects(cut, &local).is_err(), "{}", text(cut));
            may_redirect(cut);
        }
        // Trailing bytes: not one frame.
        let longer = [frame, b"+OK\r\n"].concat();
        assert!(rewrite_redirects(&longer, &local).is_err());
        // Every single-byte corruption: any answer but a panic.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..frame.len() {
            let mut bad = frame.to_vec();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bad[i] = [b'\r', b'\n', b'*', b'-', b':', b'9', b'@', b' ', seed as u8][i % 9];
            for w in [
                Topology::Slots,
                Topology::Shards,
                Topology::Nodes,
                Topology::Replicas,
            ] {
                let _ = rewrite_topology(w, &bad, &local);
            }
            let _ = rewrite_redirects(&bad, &local);
            may_redirect(&bad);
        }
    }
    for bad in [
        &b"*99999999999999999999\r\n"[..],
        b"*9223372036854775807\r\n",
        b"%4611686018427387904\r\n",
        b"|4611686018427387904\r\n",
        b"$9223372036854775807\r\nx\r\n",
        b"$-2\r\n",
        b"~-1\r\n",
        b"?\r\n",
    ] {
        assert!(rewrite_redirects(bad, &local).is_err(), "{}", text(bad));
        assert!(
            rewrite_topology(Topology::Slots, bad, &local).is_err(),
            "{}",
            text(bad)
        );
    }
    // Redirects that do not parse: an error, never forwarded as they are.
    for bad in [
        &b"-MOVED 1\r\n"[..],
        b"-MOVED x 1.2.3.4:5\r\n",
        b"-MOVED 1 1.2.3.4\r\n",
        b"-MOVED 1 1.2.3.4:99999\r\n",
        b"-ASK 1 1.2.3.4:\r\n",
        b"!7\r\nMOVED 1\r\n",
        b"-MOVED 1 1.2.3.4:5\rX",
        b"*1\r\n-ASK 1 1.2.3.4:5 6\r\n",
    ] {
        assert!(rewrite_redirects(bad, &local).is_err(), "{}", text(bad));
    }
    assert_eq!(rewrite_redirects(b"-MOVED\r\n", &local).unwrap(), None);
    for (which, bad) in [
        (Topology::Slots, &b"$3\r\nabc\r\n"[..]),
        (Topology::Slots, b"*1\r\n*1\r\n:1\r\n"),
        (
            Topology::Slots,
            b"*1\r\n*3\r\n:1\r\n:2\r\n*1\r\n$1\r\na\r\n",
        ),
        (
            Topology::Slots,
            b"*1\r\n*3\r\n:1\r\n:2\r\n*2\r\n$1\r\na\r\n:70000\r\n",
        ),
        (Topology::Shards, b"*1\r\n*3\r\n$5\r\nslots\r\n*0\r\n$5\r\n"),
        (Topology::Shards, b"*1\r\n*1\r\n$5\r\nnodes\r\n"),
        (Topology::Nodes, b"*0\r\n"),
        (Topology::Nodes, b"$5\r\na b c\r\n"),
        (Topology::Nodes, b"$7\r\na b c d\r\n"),
        (Topology::Nodes, b"=5\r\ntxtab\r\n"),
        (Topology::Nodes, b"$18\r\nid 1.2.3.4:5@x m -\r\n"),
        (Topology::Replicas, b"*1\r\n:1\r\n"),
    ] {
        assert!(
            matches!(
                rewrite_topology(which, bad, &local),
                Err(RewriteError::Malformed(_))
            ),
            "{which:?} {}",
            text(bad)
        );
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let mut deep = b"*1\r\n".repeat(200_000);
    deep.extend_from_slice(b"-MOVED 1 127.0.1.10:26380\r\n");
    // The redirect scan needs no recursion.
    let out = rewrite_redirects(&deep, &local).unwrap().unwrap();
    assert!(out.ends_with(b"-MOVED 1 127.0.0.1:7380\r\n"));
    assert!(matches!(
        rewrite_topology(Topology::Slots, &deep, &local),
        Err(RewriteError::Malformed(_))
    ));
}

#[test]
fn big_replies_are_rewritten_whole() {
    // 16,384 single-slot ranges, each with a primary and a replica.
    let mut slots = b"*16384\r\n".to_vec();
    for s in 0..16384u32 {
        let node = |port: u32| {
            format!("*4\r\n$10\r\n127.0.1.{}\r\n:{port}\r\n$40\r\n{:040x}\r\n%1\r\n$8\r\nhostname\r\n$22\r\nnode{}.example.internal\r\n", 10 + port % 6, port, port % 6)
        };
        slots.extend_from_slice(format!("*4\r\n:{s}\r\n:{s}\r\n").as_bytes());
        slots.extend_from_slice(node(26380 + s % 3).as_bytes());
        slots.extend_from_slice(node(26383 + s % 3).as_bytes());
    }
    // 2,000 nodes in CLUSTER NODES.
    let mut nodes = String::new();
    for i in 0..2000u32 {
        nodes.push_str(&format!(
            "{i:040x} 127.0.1.{}:{}@{},node{}.example.internal master - 0 0 1 connected {i}\n",
            10 + i % 6,
            26380 + i % 12,
            36380 + i % 12,
            i % 6
        ));
    }
    let nodes = format!("${}\r\n{nodes}\r\n", nodes.len()).into_bytes();
    let out = rewrite_topology(Topology::Slots, &slots, &local).unwrap();
    assert_no_original_address(&decode(&out, true), "big slots");
    let out = rewrite_topology(Topology::Nodes, &nodes, &local).unwrap();
    assert_no_original_address(&decode(&out, false), "big nodes");
    let mut exec = b"*20000\r\n".to_vec();
    for _ in 0..20000 {
        exec.extend_from_slice(b"-MOVED 1 127.0.1.10:26380\r\n");
    }
    assert!(may_redirect(&exec));
    let out = rewrite_redirects(&exec, &local).unwrap().unwrap();
    assert!(
        !out.windows(11).any(|w| w == b"127.0.1.10:"),
        "every redirect rewritten"
    );
}
