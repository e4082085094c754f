# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""nova-stealth-audit: look for live migrations in captures."""

import argparse
import json
import logging
import os
import sys

import tqdm

from nova_stealth.analysis import audit
from nova_stealth.analysis import battery
from nova_stealth.analysis import battery_report
from nova_stealth.analysis import detectors as detector_lib
from nova_stealth.analysis import flows as flow_lib
from nova_stealth.analysis import report as report_lib
from nova_stealth.analysis import tells
from nova_stealth.analysis import truth
from nova_stealth.cmd import arguments
from nova_stealth import exception
from nova_stealth import units

PLOTTED_FLOWS = 4
PROG = 'nova-stealth-audit'


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Run the stealth migration paper\'s attacks (pattern '
                    'matching and maximum entropy), its chi-square test and '
                    'CV tables over pcap/pcapng captures.')
    arguments.add_version(parser)
    parser.add_argument('captures', nargs='+', metavar='CAPTURE')
    parser.add_argument('--out', metavar='DIR',
                        help='where report.md, report.json and plots go '
                             '(required unless --build-templates)')
    parser.add_argument('--build-templates', metavar='FILE',
                        help='write the envelopes of the long flows of the '
                             'captures as a template library for the '
                             'envelope rate policy, instead of auditing')
    parser.add_argument('--licence', default='unknown',
                        help='licence of the captures, recorded with each '
                             'envelope of --build-templates')
    parser.add_argument('--truth', metavar='FILE',
                        help='JSON naming migration, chaff and background '
                             'flows (see README.rst); enables the rates')
    parser.add_argument('--model', metavar='FILE',
                        help='detectors saved by --save-model, used instead '
                             'of training')
    parser.add_argument('--save-model', metavar='FILE',
                        help='write the detectors of this run as JSON')
    parser.add_argument('--all-protocols', action='store_true',
                        help='keep UDP flows too (default: TCP only)')
    parser.add_argument('--min-packets', type=arguments.integer(1),
                        default=1000,
                        help='drop shorter flows (default 1000)')
    parser.add_argument('--burst-gap-ms', type=arguments.number(0.001),
                        default=20.0,
                        help='silence that starts a burst (default 20 ms)')
    parser.add_argument('--idle-timeout', type=arguments.number(0),
                        default=120.0, metavar='SECONDS',
                        help='forget a flow of fewer than --min-packets '
                             'packets after this much silence (default '
                             '120; 0 keeps every flow to the end)')
    parser.add_argument('--seed', type=arguments.integer(0), default=0,
                        help='seed of the 80/20 training split')
    parser.add_argument('--folds', type=arguments.integer(2), metavar='K',
                        help='judge every labelled flow by stratified '
                             'K-fold cross-validation instead of one 80/20 '
                             'split')
    parser.add_argument('--attackers', metavar='NAMES',
                        type=arguments.argument_type(attacker_names),
                        help='the battery\'s attackers to run with --truth, '
                             'comma-separated, or none (default: %s, and '
                             'cnn when PyTorch is installed); %s need the '
                             'multi-scale features, computed only then'
                             % (', '.join(_ATTACKERS[:-1]), ', '.join(
                                 battery.MULTISCALE_ATTACKERS)))
    parser.add_argument('--tolerant', action='store_true',
                        help='keep what was read before a corrupt record')
    parser.add_argument('--no-plots', action='store_true')
    parser.add_argument('--no-tells', action='store_true',
                        help='leave out what an observer reads besides '
                             'timing (payload prefixes, TLS fingerprints, '
                             'endings, ports, co-timing)')
    parser.add_argument('-q', '--quiet', action='store_true',
                        help='no progress bar')
    args = parser.parse_args(argv)
    if not (args.out or args.build_templates):
        parser.error('--out is required (or --build-templates)')
    return args


_ATTACKERS = tuple(battery.attackers(cnn=True))


def attacker_names(text):
    """--attackers: the names, in the battery's order ([] for none)."""
    names = {item.strip() for item in text.split(',') if item.strip()}
    if names == {'none'}:
        return []
    unknown = sorted(names - set(_ATTACKERS))
    if not names or unknown:
        raise ValueError('%r: choose from %s, or none'
                         % (text, ', '.join(_ATTACKERS)))
    if 'cnn' in names and not battery.sequence_available():
        raise ValueError('cnn needs PyTorch (the sequence extra of '
                         'nova_stealth), which is not installed')
    return [name for name in _ATTACKERS if name in names]


def multiscale_needed(args):
    """Whether the run's battery has an attacker that needs multi-scale."""
    if not args.truth:
        return False
    chosen = _ATTACKERS if args.attackers is None else args.attackers
    return battery.needs_multiscale(chosen)


def load_models(path):
    """{name: detector} from a file written by --save-model."""
    try:
        with open(path) as model_file:
            saved = json.load(model_file)
        return {name: detector_lib.detector_from_dict(data)
                for name, data in saved['detectors'].items()
                if name != audit.PATTERN}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError('%s: not a model written by --save-model (%s: %s)'
                         % (path, type(e).__name__, e))


def build_templates(args, options):
    """--build-templates: write the captures' envelopes, print a summary."""
    from nova_stealth.analysis import templates
    from nova_stealth.policy import templates as library_format

    try:
        library = templates.build(args.captures,
                                  [args.licence] * len(args.captures),
                                  options=options)
    except (exception.CaptureError, OSError) as e:
        print('nova-stealth-audit: %s' % e, file=sys.stderr)
        return 2
    if not library.envelopes:
        print('nova-stealth-audit: no flow of the captures lasts %.0f s at '
              '%d KiB/s or more: no envelope to write' % (
                  templates.MIN_DURATION_S, templates.MIN_RATE // 1024),
              file=sys.stderr)
        return 2
    library_format.write(library, args.build_templates)
    for envelope in library.envelopes:
        print('%s  %s  %.1f s  %.2f MiB/s' % (
            envelope.id, envelope.flow['proto'], envelope.duration_s,
            envelope.mean_rate / units.MIB))
    print('%d envelopes written to %s' % (
        len(library.envelopes), args.build_templates))
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING,
                        format='nova-stealth-audit: %(message)s')
    options = flow_lib.FlowOptions(tcp_only=not args.all_protocols,
                                   min_packets=args.min_packets,
                                   burst_gap=args.burst_gap_ms / 1000.0,
                                   idle_timeout=args.idle_timeout,
                                   multiscale=multiscale_needed(args))
    if args.build_templates:
        return build_templates(args, options)
    try:
        labels_by_key = truth.load(args.truth) if args.truth else None
        models = load_models(args.model) if args.model else None
        # Before the captures are read, which can take long.
        os.makedirs(args.out, exist_ok=True)
        with tqdm.tqdm(total=1, unit='B', unit_scale=True, desc='reading',
                       disable=True if args.quiet else None,
                       file=sys.stderr) as bar:
            def progress(done, total):
                bar.total = total
                bar.update(done - bar.n)

            tell_table = None if args.no_tells else tells.TellTable(options)
            flows, readers = flow_lib.read_flows(
                args.captures, options, tolerant=args.tolerant,
                progress=progress, also=[tell_table] if tell_table else [])
    except (exception.CaptureError, truth.TruthError, OSError,
            ValueError, KeyError) as e:
        return arguments.fail(PROG, e)
    labels = ([truth.label_of(f.key, labels_by_key) for f in flows]
              if labels_by_key is not None else None)
    report, detectors = audit.run(flows, labels, models, seed=args.seed,
                                  folds=args.folds, attackers=args.attackers)
    report['captures'] = [{'path': r.path, 'packets': r.packets,
                           'error': r.error} for r in readers]
    report['options'] = {'tcp_only': options.tcp_only,
                         'min_packets': options.min_packets,
                         'burst_gap_ms': args.burst_gap_ms,
                         'idle_timeout_s': options.idle_timeout,
                         'multiscale': options.multiscale}
    if tell_table:
        report['tells'], per_flow = tells.summarize(flows, labels,
                                                    tell_table)
        for entry, flow_tells in zip(report['flows'], per_flow):
            entry['tells'] = flow_tells
    try:
        plots = _write(args, flows, labels, report, detectors)
    except OSError as e:
        return arguments.fail(PROG, e)
    print(report_lib.markdown(report, plots).split('## Migrations')[0])
    return 0


def _write(args, flows, labels, report, detectors):
    """Write the report, the plots and the model; return the plots."""
    plots = []
    if not args.no_plots and flows:
        chosen = _plotted(flows, labels)
        series = report_lib.throughput_series(args.captures, chosen)
        named = {f.key: ('%s/%s' % labels[i]) if labels else ''
                 for i, f in enumerate(flows)}
        report_lib.plot_throughput(series, named,
                                   os.path.join(args.out, 'throughput.png'))
        plots.append('throughput.png')
        if labels:
            report_lib.plot_detection(report['detectors'],
                                      os.path.join(args.out,
                                                   'detection.png'))
            plots.append('detection.png')
    if not args.no_plots and report.get('battery'):
        os.makedirs(args.out, exist_ok=True)
        plots += battery_report.plots(
            args.out, [f['label'] for f in report['flows']],
            [f['kind'] if f['label'] == 'migration' else None
             for f in report['flows']],
            [{w: flow.window_cvs[w] for w in flow_lib.WINDOWS}
             for flow in flows], _battery_scores(report),
            flow_lib.WINDOWS)
    report_lib.write(args.out, report, plots)
    if args.save_model:
        with open(args.save_model, 'w') as model_file:
            json.dump({'detectors': {name: d.to_dict()
                                     for name, d in detectors.items()}},
                      model_file, indent=1)
    return plots


def _battery_scores(report):
    """{(attacker, trained_on): score per flow} from report.json's flows."""
    found = {}
    for index, flow in enumerate(report['flows']):
        for name, score in flow.get('battery_scores', {}).items():
            scores = found.setdefault(tuple(name.split('|')),
                                      [float('nan')] * len(report['flows']))
            scores[index] = float('nan') if score is None else score
    return found


def _plotted(flows, labels):
    """Migrations first, then the largest other flows."""
    order = sorted(range(len(flows)), key=lambda i: (
        not (labels and labels[i][0] == 'migration'), -flows[i].bytes))
    return [flows[i].key for i in order[:PLOTTED_FLOWS]]


if __name__ == '__main__':
    sys.exit(main())
