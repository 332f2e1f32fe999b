//! Every sample in tests/data/p1-samples is a test case with concrete values.

use std::collections::BTreeSet;
use std::path::PathBuf;

use p1consent_shared::dsmr::{self, DsmrError, ParseOptions, Telegram};

fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/p1-samples")
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(sample_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Crc {
    /// No CRC on the wire (DSMR 2.2/3.0, German D0).
    None,
    /// CRC present and correct.
    Valid(u16),
    /// CRC present, wrong: as stated in the telegram, and what it should be.
    Bad { found: u16, computed: u16 },
}

struct Case {
    file: &'static str,
    version: Option<&'static str>,
    meter_id: Option<&'static str>,
    timestamp_raw: Option<&'static str>,
    tariff1_kwh: Option<f64>,
    total_kwh: Option<f64>,
    power_delivered_kw: Option<f64>,
    /// Entries in the 1-0:99.97.0 log (None = no log line).
    power_failures_logged: Option<usize>,
    /// (channel, device type, reading value)
    mbus: &'static [(u8, Option<u16>, Option<f64>)],
    unknown: usize,
    crc: Crc,
}

const CASES: &[Case] = &[
    Case {
        file: "de-easymeter-q3d.txt",
        version: None,
        meter_id: None,
        timestamp_raw: None,
        tariff1_kwh: None,
        total_kwh: Some(32549.5061662),
        power_delivered_kw: Some(1.68821),
        power_failures_logged: None,
        mbus: &[],
        unknown: 3,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_iskra-me382-1004_gas.txt",
        version: None,
        meter_id: Some("KAL7005115810212"),
        timestamp_raw: None,
        tariff1_kwh: Some(608.4),
        total_kwh: None,
        power_delivered_kw: Some(1.51),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(947.68))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_iskra-me382_gas.txt",
        version: None,
        meter_id: Some("KAL7005109748812"),
        timestamp_raw: None,
        tariff1_kwh: Some(18336.285),
        total_kwh: None,
        power_delivered_kw: Some(0.57),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(16083.008))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_iskra-mt382_dsmrparser-example.txt",
        version: None,
        meter_id: Some("00000000000000"),
        timestamp_raw: None,
        tariff1_kwh: Some(1.001),
        total_kwh: None,
        power_delivered_kw: Some(1.01),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(1.001))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_iskra-mt382_gas-on-ch2.txt",
        version: None,
        meter_id: Some("ZBEV005106844912"),
        timestamp_raw: None,
        tariff1_kwh: Some(16719.94),
        total_kwh: None,
        power_delivered_kw: Some(0.89),
        power_failures_logged: None,
        mbus: &[(2, Some(3), Some(13368.864))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_iskra-mt382_no-end-marker.txt",
        version: None,
        meter_id: Some("00112233445566778899aabbccddeeff"),
        timestamp_raw: None,
        tariff1_kwh: Some(39837.604),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(13032.85))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_kamstrup-zabf_gas-on-ch2.txt",
        version: None,
        meter_id: Some(" ZABF00151772711"),
        timestamp_raw: None,
        tariff1_kwh: Some(5080.475),
        total_kwh: None,
        power_delivered_kw: Some(0.68),
        power_failures_logged: None,
        mbus: &[(2, Some(3), Some(2025.003))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_landisgyr-xmx_gas-24.2.0.txt",
        version: None,
        meter_id: Some("0123456789"),
        timestamp_raw: None,
        tariff1_kwh: Some(3687.771),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(5271.144))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr22_landisgyr-xmx_no-mbus.txt",
        version: None,
        meter_id: Some("0123456789ABCDEF"),
        timestamp_raw: None,
        tariff1_kwh: Some(11667.44),
        total_kwh: None,
        power_delivered_kw: Some(0.55),
        power_failures_logged: None,
        mbus: &[],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr30_spec-example_long-text-message.txt",
        version: None,
        meter_id: Some("K8EG004046395507"),
        timestamp_raw: None,
        tariff1_kwh: Some(12345.678),
        total_kwh: None,
        power_delivered_kw: Some(1.19),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(0.0))],
        unknown: 0,
        crc: Crc::None,
    },
    Case {
        file: "dsmr40_landisgyr-e350_clock-unset.txt",
        version: Some("40"),
        meter_id: Some("E0004001591092214"),
        timestamp_raw: Some("000101010000W"),
        tariff1_kwh: Some(1990.002),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: Some(0),
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0x4F82),
    },
    Case {
        file: "dsmr40_landisgyr-e350_crc-0000.txt",
        version: Some("40"),
        meter_id: Some("123456789012345678901234567890"),
        timestamp_raw: Some("151110192959W"),
        tariff1_kwh: Some(510.747),
        total_kwh: None,
        power_delivered_kw: Some(0.192),
        power_failures_logged: Some(0),
        mbus: &[(1, Some(3), Some(845.206))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0x0000,
            computed: 0x58C8,
        },
    },
    Case {
        file: "dsmr40_spec-example.txt",
        version: Some("40"),
        meter_id: Some("K8EG004046395507"),
        timestamp_raw: Some("101209113020W"),
        tariff1_kwh: Some(123456.789),
        total_kwh: None,
        power_delivered_kw: Some(1.193),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(12785.123))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0x522B,
            computed: 0xF46A,
        },
    },
    Case {
        file: "dsmr42_kaifa_3ph_7events.txt",
        version: Some("42"),
        meter_id: Some("E0026000024153615"),
        timestamp_raw: Some("220901152201S"),
        tariff1_kwh: Some(6285.065),
        total_kwh: None,
        power_delivered_kw: Some(0.335),
        power_failures_logged: Some(7),
        mbus: &[(1, Some(3), Some(4836.851))],
        unknown: 0,
        crc: Crc::Valid(0xE56C),
    },
    Case {
        file: "dsmr42_kaifa_3ph_events.txt",
        version: Some("42"),
        meter_id: Some("3960221976967177082151037881335713"),
        timestamp_raw: Some("161113205757W"),
        tariff1_kwh: Some(1581.123),
        total_kwh: None,
        power_delivered_kw: Some(2.027),
        power_failures_logged: Some(3),
        mbus: &[(1, Some(3), Some(981.443))],
        unknown: 0,
        crc: Crc::Valid(0x6796),
    },
    Case {
        file: "dsmr42_kaifa_no-mbus.txt",
        version: Some("42"),
        meter_id: Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        timestamp_raw: Some("160303164347W"),
        tariff1_kwh: Some(1073.079),
        total_kwh: None,
        power_delivered_kw: Some(0.143),
        power_failures_logged: Some(1),
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0x0422),
    },
    Case {
        file: "dsmr42_kaifa_node.txt",
        version: Some("42"),
        meter_id: Some("E0003000002124813"),
        timestamp_raw: Some("180306123056W"),
        tariff1_kwh: Some(4726.494),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: Some(1),
        mbus: &[(1, Some(3), Some(5359.919))],
        unknown: 0,
        crc: Crc::Valid(0xA737),
    },
    Case {
        file: "dsmr42_landisgyr-e350_4events.txt",
        version: Some("42"),
        meter_id: Some("E0031003205873716"),
        timestamp_raw: Some("200727151422S"),
        tariff1_kwh: Some(7155.388),
        total_kwh: None,
        power_delivered_kw: Some(0.276),
        power_failures_logged: Some(4),
        mbus: &[(1, Some(3), Some(6044.581))],
        unknown: 0,
        crc: Crc::Valid(0x1626),
    },
    Case {
        file: "dsmr42_landisgyr-e350_gas-ch2_lg-order.txt",
        version: Some("42"),
        meter_id: Some("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        timestamp_raw: Some("160317221058W"),
        tariff1_kwh: Some(1255.252),
        total_kwh: None,
        power_delivered_kw: Some(0.187),
        power_failures_logged: Some(0),
        mbus: &[(2, Some(3), Some(1438.997))],
        unknown: 0,
        crc: Crc::Valid(0x17B5),
    },
    Case {
        file: "dsmr42_landisgyr-e350_gas.txt",
        version: Some("42"),
        meter_id: Some("E0031003239456716"),
        timestamp_raw: Some("190905214003S"),
        tariff1_kwh: Some(3235.689),
        total_kwh: None,
        power_delivered_kw: Some(0.374),
        power_failures_logged: Some(1),
        mbus: &[(1, Some(3), Some(1091.352))],
        unknown: 0,
        crc: Crc::Valid(0xBB2A),
    },
    Case {
        file: "dsmr42_landisgyr-e350_truncated-header.txt",
        version: Some("42"),
        meter_id: Some("E0031003001699515"),
        timestamp_raw: Some("170108161107W"),
        tariff1_kwh: Some(2074.842),
        total_kwh: None,
        power_delivered_kw: Some(0.494),
        power_failures_logged: Some(3),
        mbus: &[(1, Some(3), Some(1234.0))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0xD3B0,
            computed: 0x63A1,
        },
    },
    Case {
        file: "dsmr42_spec-example-4.2.2.txt",
        version: Some("42"),
        meter_id: Some("K8EG004046395507"),
        timestamp_raw: Some("101209113020W"),
        tariff1_kwh: Some(123456.789),
        total_kwh: None,
        power_delivered_kw: Some(1.193),
        power_failures_logged: Some(2),
        mbus: &[(1, Some(3), Some(12785.123))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0xCE7C,
            computed: 0xDD0F,
        },
    },
    Case {
        file: "dsmr50_iskra-am550_1011.txt",
        version: Some("50"),
        meter_id: Some("E0034006810516416"),
        timestamp_raw: Some("181106140429W"),
        tariff1_kwh: Some(3808.351),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: Some(1),
        mbus: &[(1, Some(3), Some(1569.646))],
        unknown: 0,
        crc: Crc::Valid(0x1F28),
    },
    Case {
        file: "dsmr50_iskra-am550e_1ph_6events.txt",
        version: Some("50"),
        meter_id: Some("E0043007052870318"),
        timestamp_raw: Some("190320181403W"),
        tariff1_kwh: Some(576.239),
        total_kwh: None,
        power_delivered_kw: Some(0.193),
        power_failures_logged: Some(6),
        mbus: &[(1, Some(3), Some(304.089))],
        unknown: 0,
        crc: Crc::Valid(0x67B1),
    },
    Case {
        file: "dsmr50_iskra-am550e_gas-ch2.txt",
        version: Some("50"),
        meter_id: Some("12345678901234567890123456789012"),
        timestamp_raw: Some("191108145519W"),
        tariff1_kwh: Some(1043.936),
        total_kwh: None,
        power_delivered_kw: Some(0.189),
        power_failures_logged: Some(1),
        mbus: &[(1, Some(3), Some(0.0)), (2, Some(3), Some(241.773))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0x09AA,
            computed: 0x6ABD,
        },
    },
    Case {
        file: "dsmr50_iskra-am550t_2events_export.txt",
        version: Some("50"),
        meter_id: Some("E0044007131650618"),
        timestamp_raw: Some("220528151729S"),
        tariff1_kwh: Some(16366.258),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: Some(2),
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0x46B4),
    },
    Case {
        file: "dsmr50_iskra-am550t_3ph.txt",
        version: Some("50"),
        meter_id: Some("E0044007131650618"),
        timestamp_raw: Some("190324150541W"),
        tariff1_kwh: Some(3432.829),
        total_kwh: None,
        power_delivered_kw: Some(0.433),
        power_failures_logged: Some(1),
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0x9DF0),
    },
    Case {
        file: "dsmr50_iskra_dsmrparser-example.txt",
        version: Some("50"),
        meter_id: Some("K8EG004046395507"),
        timestamp_raw: Some("170102192002W"),
        tariff1_kwh: Some(4.426),
        total_kwh: None,
        power_delivered_kw: Some(0.244),
        power_failures_logged: Some(0),
        mbus: &[(1, Some(3), Some(0.107)), (2, Some(3), None)],
        unknown: 0,
        crc: Crc::Valid(0x6EEE),
    },
    Case {
        file: "dsmr50_landisgyr-e360_3ph_gas.txt",
        version: Some("50"),
        meter_id: Some("E0067005530757920"),
        timestamp_raw: Some("201003203959S"),
        tariff1_kwh: Some(526.479),
        total_kwh: None,
        power_delivered_kw: Some(0.781),
        power_failures_logged: Some(1),
        mbus: &[(1, Some(3), Some(35.545))],
        unknown: 0,
        crc: Crc::Valid(0x459C),
    },
    Case {
        file: "dsmr50_landisgyr-e360_5events_big-counters.txt",
        version: Some("50"),
        meter_id: Some("E0067005646757720"),
        timestamp_raw: Some("251229185539W"),
        tariff1_kwh: Some(12240.398),
        total_kwh: None,
        power_delivered_kw: Some(2.077),
        power_failures_logged: Some(5),
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0xEAD9),
    },
    Case {
        file: "dsmr50_sagemcom-t210d_9events_anonymized.txt",
        version: Some("50"),
        meter_id: Some("serienummer"),
        timestamp_raw: Some("210330192305S"),
        tariff1_kwh: Some(9.533),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: Some(9),
        mbus: &[],
        unknown: 0,
        crc: Crc::Bad {
            found: 0xD59D,
            computed: 0x2E0A,
        },
    },
    Case {
        file: "dsmr50_sagemcom-t210d_gas_anonymized.txt",
        version: Some("50"),
        meter_id: Some("serienummer"),
        timestamp_raw: Some("180108202537W"),
        tariff1_kwh: Some(0.855),
        total_kwh: None,
        power_delivered_kw: Some(0.134),
        power_failures_logged: Some(1),
        mbus: &[(1, Some(3), Some(1.29))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0xB055,
            computed: 0x60EB,
        },
    },
    Case {
        file: "dsmr50_sagemcom-t210dr_Wh-units_crc-ffff.txt",
        version: Some("50"),
        meter_id: None,
        timestamp_raw: Some("250319102812W"),
        tariff1_kwh: Some(134.904),
        total_kwh: Some(201.282),
        power_delivered_kw: Some(0.0),
        power_failures_logged: None,
        mbus: &[],
        unknown: 8,
        crc: Crc::Bad {
            found: 0xFFFF,
            computed: 0x17FF,
        },
    },
    Case {
        file: "dsmr50_sagemcom-t211_3ph.txt",
        version: Some("50"),
        meter_id: Some("E0062000013122923"),
        timestamp_raw: Some("231124215658W"),
        tariff1_kwh: Some(341.156),
        total_kwh: None,
        power_delivered_kw: Some(0.499),
        power_failures_logged: Some(1),
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0x921A),
    },
    Case {
        file: "dsmr50_sagemcom-t211_crc-mismatch.txt",
        version: Some("50"),
        meter_id: Some("E0062000010630722"),
        timestamp_raw: Some("250130211729W"),
        tariff1_kwh: Some(8901.098),
        total_kwh: None,
        power_delivered_kw: Some(1.865),
        power_failures_logged: Some(2),
        mbus: &[],
        unknown: 0,
        crc: Crc::Bad {
            found: 0xD492,
            computed: 0x6BA4,
        },
    },
    Case {
        file: "dsmr50_sagemcom-xs210_1ph_gas.txt",
        version: Some("50"),
        meter_id: Some("E0047000007630817"),
        timestamp_raw: Some("171105201324W"),
        tariff1_kwh: Some(51.775),
        total_kwh: None,
        power_delivered_kw: Some(0.335),
        power_failures_logged: Some(0),
        mbus: &[(1, Some(3), Some(16.713))],
        unknown: 0,
        crc: Crc::Valid(0x8F46),
    },
    Case {
        file: "dsmr50_spec-example.txt",
        version: Some("50"),
        meter_id: Some("K8EG004046395507"),
        timestamp_raw: Some("101209113020W"),
        tariff1_kwh: Some(123456.789),
        total_kwh: None,
        power_delivered_kw: Some(1.193),
        power_failures_logged: Some(2),
        mbus: &[(1, Some(3), Some(12785.123))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0xEF2F,
            computed: 0xE47C,
        },
    },
    Case {
        file: "emucs_fluvius-t211_1ph_gas.txt",
        version: Some("50217"),
        meter_id: Some("1SAG1105067226"),
        timestamp_raw: Some("230211111541W"),
        tariff1_kwh: Some(1114.057),
        total_kwh: None,
        power_delivered_kw: Some(0.031),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(555.937))],
        unknown: 0,
        crc: Crc::Valid(0x47E4),
    },
    Case {
        file: "emucs_fluvius_1ph_gas_1month.txt",
        version: Some("50217"),
        meter_id: Some("K8EG004046395507"),
        timestamp_raw: Some("230108222930W"),
        tariff1_kwh: Some(3540.994),
        total_kwh: None,
        power_delivered_kw: Some(0.544),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(4856.664))],
        unknown: 0,
        crc: Crc::Valid(0x7450),
    },
    Case {
        file: "emucs_fluvius_3ph_13months_no-mbus.txt",
        version: Some("50217"),
        meter_id: Some("1SAG3105011725"),
        timestamp_raw: Some("241119162126W"),
        tariff1_kwh: Some(46077.141),
        total_kwh: None,
        power_delivered_kw: Some(9.258),
        power_failures_logged: None,
        mbus: &[],
        unknown: 0,
        crc: Crc::Valid(0x32DF),
    },
    Case {
        file: "emucs_fluvius_gas-and-water.txt",
        version: Some("50217"),
        meter_id: Some("1SAG3101021605"),
        timestamp_raw: Some("200512135409S"),
        tariff1_kwh: Some(0.034),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(112.384)), (2, Some(7), Some(872.234))],
        unknown: 0,
        crc: Crc::Valid(0x3AD7),
    },
    Case {
        file: "emucs_fluvius_mbus-without-reading.txt",
        version: Some("50213"),
        meter_id: Some("12345678901234567890123456789012"),
        timestamp_raw: Some("200305222945W"),
        tariff1_kwh: Some(172.987),
        total_kwh: None,
        power_delivered_kw: Some(0.638),
        power_failures_logged: None,
        mbus: &[(1, Some(3), Some(0.0))],
        unknown: 0,
        crc: Crc::Bad {
            found: 0x99B6,
            computed: 0xA3FD,
        },
    },
    Case {
        file: "emucs_spec-2.1.1_example2.txt",
        version: Some("50221"),
        meter_id: Some("1SAG1100000231"),
        timestamp_raw: Some("200512145552S"),
        tariff1_kwh: Some(0.915),
        total_kwh: None,
        power_delivered_kw: Some(0.0),
        power_failures_logged: None,
        mbus: &[
            (1, Some(3), Some(112.384)),
            (2, Some(7), Some(872.234)),
            (3, None, None),
            (4, None, None),
        ],
        unknown: 3,
        crc: Crc::Bad {
            found: 0x1234,
            computed: 0xA396,
        },
    },
    Case {
        file: "ie-iskra-mie5t.txt",
        version: None,
        meter_id: Some("09610"),
        timestamp_raw: Some("230202132747S"),
        tariff1_kwh: Some(10.181),
        total_kwh: None,
        power_delivered_kw: Some(0.17),
        power_failures_logged: None,
        mbus: &[(1, None, None)],
        unknown: 1,
        crc: Crc::Bad {
            found: 0xAD3B,
            computed: 0xF2A8,
        },
    },
    Case {
        file: "lux-smarty_dsmrreader.txt",
        version: Some("42"),
        meter_id: Some("12345678901234567890123456789012"),
        timestamp_raw: Some("191031142239W"),
        tariff1_kwh: None,
        total_kwh: Some(5675.956),
        power_delivered_kw: Some(3.074),
        power_failures_logged: None,
        mbus: &[],
        unknown: 8,
        crc: Crc::Valid(0x1BB8),
    },
    Case {
        file: "se-kamstrup_omnia.txt",
        version: None,
        meter_id: None,
        timestamp_raw: Some("211115100940W"),
        tariff1_kwh: None,
        total_kwh: Some(3.997),
        power_delivered_kw: Some(0.0),
        power_failures_logged: None,
        mbus: &[],
        unknown: 10,
        crc: Crc::Valid(0x5FCE),
    },
];

fn check(case: &Case, t: &Telegram) {
    let f = case.file;
    assert_eq!(t.version.as_deref(), case.version, "{f}: version");
    assert_eq!(t.meter_id.as_deref(), case.meter_id, "{f}: meter_id");
    assert_eq!(
        t.timestamp_raw.as_deref(),
        case.timestamp_raw,
        "{f}: timestamp"
    );
    assert_eq!(
        t.energy_delivered_tariff1_kwh, case.tariff1_kwh,
        "{f}: tariff1"
    );
    assert_eq!(t.energy_delivered_total_kwh, case.total_kwh, "{f}: total");
    assert_eq!(t.power_delivered_kw, case.power_delivered_kw, "{f}: power");
    assert_eq!(
        t.power_failure_log.as_ref().map(Vec::len),
        case.power_failures_logged,
        "{f}: failure log"
    );
    let mbus: Vec<_> = t
        .mbus
        .iter()
        .map(|c| {
            (
                c.channel,
                c.device_type,
                c.reading.as_ref().map(|r| r.value),
            )
        })
        .collect();
    assert_eq!(mbus, case.mbus, "{f}: mbus");
    assert_eq!(
        t.unknown.len(),
        case.unknown,
        "{f}: unknown {:?}",
        t.unknown
    );
    assert!(t.header.raw.starts_with('/'), "{f}: header");
}

#[test]
fn every_sample_parses_to_its_values() {
    for case in CASES {
        let bytes = read(case.file);
        let lenient = dsmr::parse(&bytes, ParseOptions::no_crc())
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        check(case, &lenient);
        let strict = dsmr::parse(&bytes, ParseOptions::default());
        match case.crc {
            Crc::None => {
                let t = strict.unwrap_or_else(|e| panic!("{}: {e}", case.file));
                assert_eq!(t.crc, None, "{}", case.file);
                assert!(!t.crc_verified);
                check(case, &t);
            }
            Crc::Valid(c) => {
                let t = strict.unwrap_or_else(|e| panic!("{}: {e}", case.file));
                assert_eq!(t.crc, Some(c), "{}", case.file);
                assert!(t.crc_verified, "{}", case.file);
                assert!(t.warnings.is_empty(), "{}: {:?}", case.file, t.warnings);
                check(case, &t);
            }
            Crc::Bad { found, computed } => {
                assert_eq!(
                    strict,
                    Err(DsmrError::Crc {
                        expected: computed,
                        found
                    }),
                    "{}",
                    case.file
                );
                assert_eq!(lenient.crc, Some(found));
                assert!(!lenient.crc_verified);
                assert!(
                    lenient
                        .warnings
                        .iter()
                        .any(|w| w.reason.starts_with("CRC mismatch")),
                    "{}",
                    case.file
                );
            }
        }
        // The framer finds exactly this telegram in the file.
        let frames = dsmr::frame_all(&bytes);
        let found: Vec<_> = frames.iter().filter_map(|r| r.as_ref().ok()).collect();
        if case.file.contains("no-end-marker") {
            assert!(found.is_empty());
            assert!(matches!(
                frames.as_slice(),
                [Err(dsmr::FrameError::Unterminated { data })] if data.len() == bytes.len()
            ));
        } else {
            assert_eq!(found.len(), 1, "{}: {frames:?}", case.file);
            if let Some(fr) = found.first() {
                assert_eq!(fr.stated_crc(), lenient.crc, "{}", case.file);
            }
        }
        // JSON round trip is valid and carries the header.
        let json = serde_json::to_value(&lenient).expect("serialise");
        assert_eq!(json["header"]["raw"], lenient.header.raw.as_str());
    }
}

struct ManifestRow {
    file: String,
    crc_valid: String,
    notes: String,
}

fn manifest() -> Vec<ManifestRow> {
    let text = std::fs::read_to_string(sample_dir().join("MANIFEST.tsv")).expect("manifest");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 7, "manifest row {l}");
            ManifestRow {
                file: cols[0].to_string(),
                crc_valid: cols[4].to_string(),
                notes: cols[6].to_string(),
            }
        })
        .collect()
}

#[test]
fn manifest_and_table_cover_every_sample() {
    let rows = manifest();
    let listed: BTreeSet<String> = rows.iter().map(|r| r.file.clone()).collect();
    let table: BTreeSet<String> = CASES.iter().map(|c| c.file.to_string()).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(sample_dir())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    assert_eq!(listed, table, "MANIFEST.tsv vs test table");
    assert_eq!(listed, on_disk, "MANIFEST.tsv vs files");
    assert_eq!(CASES.len(), rows.len());
    for row in &rows {
        let case = CASES.iter().find(|c| c.file == row.file).expect("case");
        match row.crc_valid.as_str() {
            "yes" => assert!(matches!(case.crc, Crc::Valid(_)), "{}", row.file),
            "n/a" => assert_eq!(case.crc, Crc::None, "{}", row.file),
            "no" => {
                let Crc::Bad { found, computed } = case.crc else {
                    panic!("{}: manifest says crc_valid=no", row.file)
                };
                // "stated CRC 522B, computed F46A"
                let notes = &row.notes;
                let tail = notes
                    .split("stated CRC ")
                    .nth(1)
                    .unwrap_or_else(|| panic!("{}: no stated CRC in notes", row.file));
                let stated = tail.get(..4).expect("stated");
                let comp = tail
                    .split(", computed ")
                    .nth(1)
                    .and_then(|s| s.get(..4))
                    .unwrap_or_else(|| panic!("{}: no computed CRC in notes", row.file));
                assert_eq!(format!("{found:04X}"), stated, "{}", row.file);
                assert_eq!(format!("{computed:04X}"), comp, "{}", row.file);
            }
            other => panic!("{}: crc_valid {other}", row.file),
        }
    }
}

fn sample(file: &str) -> Telegram {
    dsmr::parse(&read(file), ParseOptions::no_crc()).expect(file)
}

#[test]
fn kaifa_event_log_with_placeholders_and_big_durations() {
    let t = sample("dsmr42_kaifa_3ph_events.txt");
    let log = t.power_failure_log.as_ref().expect("log");
    let got: Vec<_> = log
        .iter()
        .map(|e| (e.end.raw.as_str(), e.end.clock_set, e.duration_s))
        .collect();
    assert_eq!(
        got,
        [
            ("000104180320W", false, 237126),
            ("000101000001W", false, 2147583646),
            ("000102000003W", false, 2317482647),
        ]
    );
    assert_eq!(t.power_failures, Some(15));
    assert_eq!(t.long_power_failures, Some(7));
    assert_eq!(t.current_l2_a, Some(6.0));
    assert_eq!(t.power_delivered_l2_kw, Some(1.247));
    assert_eq!(t.voltage_sags_l1, Some(0));
    assert_eq!(t.tariff, Some(2));
    let gas = t.gas().expect("gas");
    assert_eq!(gas.channel, 1);
    let r = gas.reading.as_ref().expect("reading");
    assert_eq!(
        r.timestamp.iso.as_deref(),
        Some("2016-11-29T20:00:00+01:00")
    );
    assert_eq!(r.unit.as_deref(), Some("m3"));
    assert_eq!(r.obis, "0-1:24.2.1");
    assert_eq!(
        gas.equipment_id.as_deref(),
        Some("4819243993373755377509728609491464")
    );
}

#[test]
fn dsmr22_gas_on_two_lines() {
    let t = sample("dsmr22_iskra-me382_gas.txt");
    assert_eq!(t.header.manufacturer.as_deref(), Some("ISk"));
    assert_eq!(t.header.identification, "\\2ME382-1003");
    assert_eq!(t.version, None);
    let ch = t.mbus_channel(1).expect("ch1");
    assert_eq!(ch.kind.as_deref(), Some("gas"));
    assert_eq!(ch.valve_position, Some(1));
    assert!(!ch.empty);
    let r = ch.reading.as_ref().expect("reading");
    assert_eq!(r.value, 16083.008);
    assert_eq!(r.timestamp.raw, "210413190000");
    assert_eq!(r.timestamp.iso.as_deref(), Some("2021-04-13T19:00:00"));
    assert_eq!(
        t.electricity_threshold
            .as_ref()
            .map(|q| (q.value, q.unit.as_str())),
        Some((999.0, "kW"))
    );
    // 24.2.0 variant
    let x = sample("dsmr22_landisgyr-xmx_gas-24.2.0.txt");
    let r = x.gas().and_then(|c| c.reading.as_ref()).expect("gas");
    assert_eq!((r.value, r.obis.as_str()), (5271.144, "0-1:24.2.0"));
}

#[test]
fn text_messages_are_hex_decoded() {
    let t = sample("dsmr30_spec-example_long-text-message.txt");
    assert_eq!(t.text_message_code.as_deref(), Some("012345678"));
    assert_eq!(
        t.text_message.as_deref(),
        Some("0123456789:;<=>?0123456789:;<=>?0123456789:;<=>?0123456789:;<=>?0123456789:;<=>?")
    );
    assert_eq!(t.text_message_raw.as_ref().map(String::len), Some(160));
    assert_eq!(
        t.electricity_threshold.as_ref().map(|q| q.unit.as_str()),
        Some("A")
    );
}

#[test]
fn belgian_emucs_demand() {
    let t = sample("emucs_fluvius_3ph_13months_no-mbus.txt");
    assert_eq!(t.version.as_deref(), Some("50217"));
    assert_eq!(t.average_demand_kw, Some(4.065));
    let m = t.max_demand_month.as_ref().expect("1.6.0");
    assert_eq!(
        (m.timestamp.raw.as_str(), m.power_kw),
        ("241115084500W", 25.891)
    );
    let h = t.max_demand_history.as_ref().expect("98.1.0");
    assert_eq!(h.len(), 13);
    assert_eq!(h[0].month.iso.as_deref(), Some("2023-11-01T00:00:00+01:00"));
    assert_eq!(h[0].timestamp.raw, "231026084500S");
    assert_eq!(h[0].power_kw, 12.195);
    assert_eq!(h[12].power_kw, 17.198);
    assert_eq!(t.current_limit_a, Some(999.0));
    assert_eq!(t.breaker_state, Some(1));
    assert_eq!(t.voltage_l2_v, Some(233.0));
    assert_eq!(t.current_l3_a, Some(17.98));

    let w = sample("emucs_fluvius_gas-and-water.txt");
    let water = w.mbus_channel(2).expect("water");
    assert_eq!(
        (water.device_type, water.kind.as_deref()),
        (Some(7), Some("water"))
    );
    assert_eq!(water.equipment_id.as_deref(), Some("8SAG1234567890"));
    let gas = w
        .mbus_channel(1)
        .and_then(|c| c.reading.as_ref())
        .expect("gas");
    assert_eq!((gas.obis.as_str(), gas.value), ("0-1:24.2.3", 112.384));
    assert_eq!(
        gas.timestamp.iso.as_deref(),
        Some("2020-05-12T13:45:58+02:00")
    );
}

#[test]
fn empty_mbus_slots_are_kept_and_marked() {
    let t = sample("emucs_fluvius_mbus-without-reading.txt");
    let ch = t.mbus_channel(1).expect("ch1");
    assert!(ch.empty);
    let r = ch.reading.as_ref().expect("reading");
    assert_eq!(
        (r.timestamp.raw.as_str(), r.timestamp.clock_set, r.value),
        ("632525252525W", false, 0.0)
    );
    assert_eq!(r.unit, None);
    assert_eq!(ch.valve_position, Some(0));

    let t = sample("dsmr50_iskra-am550e_gas-ch2.txt");
    assert!(t.mbus_channel(1).expect("ch1").empty);
    assert!(!t.mbus_channel(2).expect("ch2").empty);
    assert_eq!(t.gas().map(|c| c.channel), Some(2));
}

#[test]
fn spec_typos_are_line_warnings() {
    // The DSMR 4.0 spec example prints `1-0:99:97.0` and `1-0:72:32.0`.
    let t = sample("dsmr40_spec-example.txt");
    let bad: Vec<_> = t
        .warnings
        .iter()
        .filter(|w| w.reason.starts_with("not an OBIS code"))
        .map(|w| (w.line, w.text.get(..11).unwrap_or("")))
        .collect();
    assert_eq!(bad, [(17, "1-0:99:97.0"), (20, "1-0:72:32.0")]);
    assert_eq!(t.power_failures, Some(4));
    assert_eq!(t.voltage_sags_l2, Some(1));
    // 4.2.2 writes `1-0:31.7.0.255`: read as the historical-value suffix 255.
    let t = sample("dsmr42_spec-example-4.2.2.txt");
    assert_eq!(t.current_l3_a, Some(3.0));
    assert_eq!(t.power_returned_l3_kw, Some(6.666));
}

#[test]
fn wh_units_are_normalised_to_kwh() {
    let t = sample("dsmr50_sagemcom-t210dr_Wh-units_crc-ffff.txt");
    assert_eq!(t.energy_delivered_total_kwh, Some(201.282));
    assert_eq!(t.energy_delivered_tariff2_kwh, Some(66.378));
    assert_eq!(t.energy_returned_total_kwh, Some(320.908));
    assert_eq!(t.energy_returned_tariff1_kwh, Some(317.131));
    assert_eq!(t.power_returned_kw, Some(3.996));
    assert_eq!(t.power_delivered_kw, Some(0.0));
}

#[test]
fn clock_not_set() {
    let t = sample("dsmr40_landisgyr-e350_clock-unset.txt");
    assert_eq!(t.timestamp_raw.as_deref(), Some("000101010000W"));
    assert_eq!(t.clock_set, Some(false));
    let json = serde_json::to_value(&t).expect("json");
    assert!(json.get("timestamp").is_none());
    assert_eq!(json["timestamp_raw"], "000101010000W");
    assert_eq!(json["clock_set"], false);
}

#[test]
fn foreign_variants_parse() {
    let de = sample("de-easymeter-q3d.txt");
    assert_eq!(de.header.manufacturer.as_deref(), Some("ESY"));
    assert_eq!(de.power_delivered_l1_kw, Some(0.55729));
    assert_eq!(de.unknown[0].obis, "1-0:0.0.0*255");
    assert_eq!(de.unknown[0].values, ["1336001560"]);
    // the gateway junk after '!' is ignored with a warning when parsing the whole file
    let strict = dsmr::parse(&read("de-easymeter-q3d.txt"), ParseOptions::default()).expect("de");
    assert_eq!(strict.warnings.len(), 1);

    let se = sample("se-kamstrup_omnia.txt");
    assert_eq!(se.header.raw, "/KAM5");
    assert_eq!(se.header.identification, "");
    assert_eq!(se.voltage_l3_v, Some(240.7));
    assert!(
        se.unknown
            .iter()
            .any(|u| u.obis == "1-0:3.8.0" && u.values == ["00000000.000*kVArh"])
    );

    let lu = sample("lux-smarty_dsmrreader.txt");
    assert_eq!(
        lu.electricity_threshold
            .as_ref()
            .map(|q| (q.value, q.unit.as_str())),
        Some((27.6, "kVA"))
    );
    assert_eq!(lu.energy_returned_total_kwh, Some(0.002));

    let ie = sample("ie-iskra-mie5t.txt");
    assert_eq!(ie.power_returned_l3_kw, Some(0.627));
    assert!(ie.mbus_channel(1).expect("ch1").empty);
}
