"""A large synthetic prompt corpus for draft-head self-distillation: templates x fillers.

    build_corpus(num_prompts=6000, seed=0) -> list[dict]
    write_corpus(path, num_prompts=6000, seed=0) -> list[dict]   # checks overlaps, writes JSONL
    find_overlaps(rows, eval_user_texts()) -> list[str]   # [] when no row repeats an eval prompt
    python -m specdec.train.corpus --out src/specdec/data/train_corpus.jsonl --num-prompts 6000

Every word here was written for this project. Hand-written task templates (`TEMPLATES`, each
with a category) are filled with hand-written slot fillers: topics, people, objects, source
paragraphs (`PASSAGES`), code, conversations; math and sequence tasks draw their numbers from
the seeded RNG. About a quarter to a third of the rows are *grounded*: the answer reuses text
given in the prompt (copy, rewrite, fix typos, extract, reformat, summarize, continue a list),
as much real chat traffic does.

Rows: {"id", "category", "template", "prompt"} or {"id", "category", "template", "messages"}
(earlier assistant turns included, ending with a user turn), which
`specdec.train.data.load_conversations` reads; "template" names the template that wrote the
row. The same (num_prompts, seed) gives the same rows. No prompt repeats another, no template
writes more than `MAX_TEMPLATE_SHARE` of the rows, and no row shares text with the benchmark
prompts in `data/prompts` (checked by `find_overlaps`, enforced by tests/test_corpus.py).

Template syntax: `{slot}` draws a filler (the same draw everywhere in one prompt), `{slot#2}` a
second distinct draw, `{slot.1}` a field of a tuple filler, `{passage:recipe,email}` a source
paragraph of those kinds; `[[a|b|c]]` picks one phrasing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EVAL_PROMPTS_DIR = DATA_DIR / "prompts"
DEFAULT_CORPUS = DATA_DIR / "train_corpus.jsonl"
MAX_TEMPLATE_SHARE = 0.04  # of num_prompts, per template
MAX_PROMPT_CHARS = 600  # one user prompt
MAX_CONVERSATION_CHARS = 900  # all turns of a multi-turn row
OVERLAP_NGRAM = 8


def _lines(block: str) -> list[str]:
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def _pairs(block: str, sep: str = " | ") -> list[tuple[str, ...]]:
    return [tuple(part.strip() for part in line.split(sep)) for line in _lines(block)]


@dataclass(frozen=True)
class Passage:
    kind: str  # news, product, email, casual, recipe, instructions, history, science, ...
    about: str  # "a library extending its opening hours"
    text: str


def _passages(block: str) -> list[Passage]:
    """Entries separated by blank lines: a "kind | about" line, then the text (dialogue keeps
    its line breaks; other kinds join their wrapped lines with spaces)."""
    out = []
    for entry in block.strip().split("\n\n"):
        head, *body = [line.strip() for line in entry.strip().splitlines()]
        kind, about = (s.strip() for s in head.split("|"))
        text = ("\n" if kind == "dialogue" else " ").join(body)
        out.append(Passage(kind, about, text))
    return out


# ---------------------------------------------------------------------------------------------
# Source paragraphs for the grounded tasks (2-5 sentences; invented towns, firms and people).

PASSAGES = _passages("""
news | a library extending its opening hours
The public library in Dunmore will stay open until nine o'clock on weekday evenings from the
first of next month. The change follows a survey in which more than six hundred residents asked
for later hours. Two new part-time staff members have been hired, and the reading room on the
second floor will be reserved for quiet study after six.

news | a new footbridge over a river
Work on the new footbridge across the Alder River began on Tuesday. The bridge will link the
Eastbank housing estate with the business park and cut the walk to work for many residents from
forty minutes to ten. Engineers expect the steel frame to be in place by autumn, and the bridge
should open to pedestrians and cyclists next spring.

news | a school team winning a robotics contest
A team of six students from Hillcrest Secondary School won first prize at the regional robotics
championship on Saturday. Their machine, nicknamed Sprocket, sorted colored blocks faster than
any of the other twenty-two entries. The team will travel to the national final in May, and the
school is raising money to cover the cost of the trip.

news | a heat warning for the coast
The weather service has issued a heat warning for the coastal region from Thursday to Sunday,
with daytime temperatures expected to reach 38 degrees. Residents are advised to drink plenty of
water, avoid hard exercise in the afternoon, and check on elderly neighbors. Public swimming
pools will extend their opening hours until ten in the evening.

news | a farmers market moving to a new square
The Saturday farmers market in Pellham will move from the church car park to Victoria Square
starting on June 3. Organizers say the square offers shade, more space for stalls, and easier
access by bus. Around forty sellers are expected, offering fruit, vegetables, bread, cheese and
flowers. The market will keep its usual hours, from eight until one.

news | a city testing electric buses
The city council has begun a six-month trial of four electric buses on route 12, which runs
between the central station and the university. Each bus can travel about 250 kilometers on a
single charge and is recharged overnight at the depot. If passengers and drivers respond well,
the council plans to replace a third of its diesel fleet by 2030.

news | a missing dog found far from home
A golden retriever that went missing during a thunderstorm last week has been found safe
eighteen kilometers from home. The dog, named Biscuit, was spotted by a cyclist near a farm
outside Carrow and taken to a local vet, who read the microchip and called the owners. The family
thanked everyone who shared posters online.

news | a museum reopening after renovation
The Marlow Museum of Local History reopened on Friday after an eighteen-month renovation. The
building now has a lift, wider doors, and a new gallery devoted to the town's textile mills.
Entry remains free, and the museum is open from Tuesday to Sunday. A special exhibition of old
mill photographs runs until the end of October.

news | a food company opening a factory
Brightwell Foods announced that it will open a new bakery factory on the edge of Kelton next
year, creating about 180 jobs. The plant will produce bread and pastries for supermarkets across
the region. The company said it would run training courses for local people with no experience
in food production.

news | the results of a city marathon
More than four thousand runners took part in the Harbor City Marathon on Sunday, despite light
rain during the first hour. The men's race was won in 2 hours 14 minutes by a local
physiotherapist, and the women's race in 2 hours 31 minutes. Organizers said nearly a million
dollars was raised for the children's hospital.

news | a road closed for pipe repairs
Mill Lane will be closed to traffic between the roundabout and Station Road from Monday 9 October
for three weeks while the water company replaces old pipes. Drivers will be sent along Church
Street instead. Pedestrian access to shops will remain open, and buses on route 4 will use
temporary stops on Church Street.

news | volunteers cleaning up a beach
About 150 volunteers collected more than two tonnes of litter from Sandford Beach on Saturday
morning. Most of the rubbish was plastic bottles, fishing line and food wrappers. The clean-up
was organized by students from the local college, who plan to repeat it every three months and
have asked the council for more bins near the car park.

news | a hospital opening a children's wing
St. Aldric's Hospital opened a new children's wing this week with forty beds, a playroom and a
small garden on the roof. The wing was paid for partly by donations from local businesses and
residents, who raised more than two million dollars over three years. Parents will be able to
stay overnight in fold-out beds next to their children.

news | a power cut in the northern districts
Around twelve thousand homes in the northern districts lost power for up to five hours on
Wednesday night after a fault at a substation. Engineers restored electricity to most customers
by two in the morning. The energy company apologized and said customers who were without power
for more than twelve hours could claim compensation.

news | a baby giraffe born at a zoo
Keepers at Westmoor Zoo are celebrating the birth of a baby giraffe, the first at the zoo in
eleven years. The calf, a female, was standing within an hour of being born and is already 1.8
meters tall. Visitors will be able to see her and her mother in the giraffe house from next
week, and the zoo has invited the public to suggest names.

news | a town center closed to cars on Sundays
From next month, the center of Ravensholt will be closed to cars every Sunday between ten and
four. The mayor said the aim is to make the old town quieter and safer for families, and to help
cafes put tables outside. Residents with parking permits and delivery vans will still be allowed
in before ten.

product | a stainless steel water bottle
The Keel bottle keeps drinks cold for 24 hours and hot for 12. It holds 750 milliliters, weighs
340 grams, and is made of double-walled stainless steel with a leak-proof screw lid. It is
available in navy, white, coral and olive, costs 29 dollars, and comes with a lifetime guarantee
against rust.

product | a folding electric bicycle
The Zipline Fold is an electric bicycle that folds in half in under twenty seconds, so it fits in
the boot of a small car or under a desk. Its battery gives a range of about 60 kilometers and
charges fully in four hours. The frame is aluminum, the bike weighs 17 kilograms, and the price
is 1,290 dollars including lights and a rear rack.

product | a desk lamp with a charging port
The Lumo desk lamp has five brightness levels and three color temperatures, from warm yellow to
cool white. A touch strip on the base controls the light, and a USB port lets you charge your
phone while you work. The lamp costs 45 dollars, uses only 9 watts, and is covered by a two-year
warranty.

product | a cast iron skillet
Our 26-centimeter cast iron skillet comes pre-seasoned and ready to use on gas, electric,
induction or an open fire. It holds heat evenly, so it is ideal for searing steak or baking
cornbread. The pan weighs 2.4 kilograms and costs 39 dollars. Wash it by hand and dry it straight
away to prevent rust.

product | a tablet for children
The Sprout Tab is an 8-inch tablet designed for children aged four to ten. It comes with a rubber
case that survives drops of up to 1.5 meters, parental controls, and more than two hundred
learning games already installed. The battery lasts about ten hours. It costs 119 dollars and is
sold in green, blue and purple.

product | noise-cancelling headphones
The Hush 300 headphones block out background noise on trains, planes and in busy offices. They
offer up to 30 hours of playback per charge, and ten minutes of charging gives three hours of
music. The ear cups fold flat for travel. The headphones cost 199 dollars and come in black or
silver with a hard carrying case.

product | a light tent for backpackers
The Ridgeback 2 is a two-person tent for backpackers that weighs just 1.6 kilograms. It takes
about five minutes to pitch, has a door on each side, and is rated for wind and heavy rain. The
package includes the tent, poles, twelve pegs and a stuff sack. The price is 249 dollars.

product | a coffee grinder
The Burrmaster grinder has 18 settings, from a fine powder for espresso to coarse grounds for a
French press. Its container holds enough beans for twelve cups, and a timer stops the motor
automatically. It is 24 centimeters tall, costs 65 dollars, and the parts that touch the coffee
can be removed for cleaning.

product | a robot vacuum cleaner
The Dustin robot vacuum maps your home on its first run and then cleans room by room. It runs for
120 minutes on a charge, returns to its dock by itself, and can be scheduled from a phone app. It
is 9 centimeters high, so it fits under most sofas. It sells for 279 dollars.

product | a rubber and cork yoga mat
The Grounded yoga mat is made from natural rubber and recycled cork, with a grippy surface that
stays firm even when you sweat. It measures 183 by 61 centimeters, is 5 millimeters thick, and
weighs 2.5 kilograms. It comes with a cotton carrying strap and costs 72 dollars.

product | a kit that waters potted plants
The Thirsty Roots kit waters up to twenty potted plants while you are away. A small pump draws
water from any bucket and sends it through thin tubes to each pot on a schedule you choose. It
runs on four AA batteries for about three months. The kit costs 34 dollars and includes ten
meters of tubing.

product | a board game about lighthouses
Harbor Lights is a board game for two to five players aged ten and up. Players build lighthouses
along a stormy coast and guide ships safely to port, scoring points for each rescue. A game lasts
about forty-five minutes. The box contains a folding board, 60 wooden ships, 120 cards and a rule
book, and sells for 42 dollars.

email | moving a project meeting
Hi everyone, the project meeting planned for Thursday at 10 has to move because the conference
room is being repainted. I have booked room 3B for Friday at 2 instead. Please bring your updated
timelines, and let me know by Wednesday if you cannot make the new time. Thanks, Rosa

email | a late shipment of office chairs
Dear Mr. Patel, I am writing to let you know that the shipment of 500 office chairs ordered on 2
March will arrive one week late because of a delay at the port. The new delivery date is 21
March. We are sorry for the inconvenience and will take 5 percent off the invoice. Kind regards,
Helen Ford, Customer Service

email | a student asking for more time on an essay
Dear Professor Lindqvist, I am sorry to ask, but could I have three more days to finish my essay
on renewable energy? I was ill last week and missed two classes. I have attached a note from my
doctor and the first half of the draft. I would be grateful for any extension you can give. Best
wishes, Tomás

email | an invitation to a retirement party
Hello all, as many of you know, Gerald is retiring at the end of the month after 31 years with
the company. We are holding a small party for him on Friday the 28th at 4 pm in the staff
kitchen. There will be cake and a card going round for everyone to sign. Please reply by Tuesday
so we know how many people to expect. Cheers, Anika

email | a complaint about a broken kettle
Dear Sir or Madam, I bought a Brevo electric kettle from your website on 14 January, order number
55821. After two weeks the switch stopped working and the kettle no longer heats water. I would
like a replacement or a full refund. I have kept the box and the receipt. Yours faithfully,
Daniel Okoro

email | a welcome note for a new designer
Welcome to the team, Lena! Your first day is Monday 4 September. Please come to the front desk at
9 am and ask for me. In the morning you will get your laptop and badge, and after lunch you will
meet the rest of the design team. If you have any questions before then, just reply to this
email. See you soon, Marco

email | a tenant asking for a heating repair
Dear Ms. Kaur, the heating in flat 6 has not worked since last Saturday, and the nights are
getting cold. I have tried resetting the boiler twice as the manual says, but it shows the error
code E4. Could you please arrange for a repair person to visit this week? I am at home every
afternoon after 3. Thank you, Peter Novak

email | a conference registration confirmation
Dear Dr. Amari, thank you for registering for the Northern Water Research Conference, which takes
place from 12 to 14 June at the Lakeside Hotel. Your registration includes all talks, lunch on
each day and the conference dinner on 13 June. Please bring this email or your ID to the
registration desk. We look forward to seeing you. The Organizing Committee

email | a parent telling a teacher about an absence
Dear Mr. Hughes, my son Leo will miss school next Monday and Tuesday because we are attending a
family wedding abroad. Could you let me know which topics the class will cover so that he can
catch up? He will bring back any homework on Wednesday. Thank you for your help. Best regards,
Sophie Marchetti

email | a reminder to change passwords
Hello, this is a reminder from the IT team that all staff passwords must be changed by Friday 17
November. Your new password should be at least twelve characters long and should not be one you
have used before. If you need help, visit the IT desk on the ground floor between 9 and 5. Thank
you, IT Support

email | thanking volunteers after a book sale
Dear volunteers, thank you so much for your help at Saturday's book sale. Together we sold more
than 1,400 books and raised 3,250 dollars for the school library. The leftover books will be
given to the hospital and two local care homes. We hope to see many of you again at the winter
sale in December. With gratitude, Marion

email | a job offer for a junior accountant
Dear Ms. Adeyemi, we are delighted to offer you the position of Junior Accountant at Corwell and
Sons, starting on 1 February. The salary is 38,000 dollars a year, with 25 days of holiday.
Please sign and return the attached contract by 15 January. If you have any questions, you can
call me directly on 555 0142. Sincerely, James Whitlow, Head of Finance

casual | asking a friend to feed a cat
hey!! so im going away this weekend and was wondering if u could pop round and feed Mittens sat
and sun? food is in the cupboard by the fridge, she gets half a tin morning and night. key is
under the blue pot. ill bring u back something nice lol. thanks sooo much

casual | cancelling plans because of work
ugh sorry, cant make it tonight, work went crazy and im still at the office. can we do thursday
instead? same place, 7ish? my treat to make up for it

casual | ordering pizza for the office
guys the pizza place downstairs is doing half price today so im ordering for everyone at 12. tell
me what u want by 11 or ur getting pepperoni whether u like it or not

casual | asking a neighbor about drilling noise
hi its jess from number 8. just wondering if the drilling will go on much longer? baby is trying
to nap and its been pretty loud since 9. no worries if its almost done, just let me know!

casual | telling a manager about a late train
morning! train is stuck outside the station, some signal problem. probably gonna be 30 mins late.
i'll jump straight into the 10am call from my phone if i'm not in by then

casual | asking for a lasagna recipe
omg that lasagna last night was amazing. can u send me the recipe?? i want to make it for my
parents on sunday. also where did u get the bread from

casual | feedback on a friend's draft
read ur draft, its really good!! maybe cut the intro a bit, it takes a while to get going. also
the bit about the budget is kinda confusing, maybe add a table? otherwise love it

casual | asking to borrow the family car
hey dad, any chance i could borrow the car on saturday? need to help maya move some boxes to her
new flat. ill fill up the tank and have it back by 6 promise

casual | a sofa delivered in the wrong color
so the sofa finally came but its the wrong color?? ordered grey got bright green. been on hold
with them for 40 mins. anyway cant do coffee tmrw, have to wait in for the pickup

casual | congratulating a colleague on a promotion
yesss congrats on the promotion!!! so deserved after all the work u put in on the launch. drinks
on friday to celebrate? ill tell the others

recipe | a quick tomato soup
For a quick tomato soup, soften one chopped onion and two cloves of garlic in a tablespoon of
olive oil. Add two tins of chopped tomatoes, 500 milliliters of vegetable stock and a teaspoon of
sugar, then simmer for twenty minutes. Blend until smooth, season with salt and pepper, and stir
in a splash of cream before serving.

recipe | banana bread
Mash three ripe bananas in a large bowl and mix in 75 grams of melted butter. Stir in 150 grams
of sugar, one beaten egg and a teaspoon of vanilla. Add 190 grams of flour and a teaspoon of
baking soda, and mix just until combined. Pour the batter into a greased loaf tin and bake at 175
degrees for about an hour.

recipe | a red lentil curry
Fry a diced onion in oil until golden, then add a tablespoon of grated ginger, two crushed garlic
cloves and two teaspoons of curry powder. Stir in 200 grams of red lentils, a tin of coconut milk
and 400 milliliters of water. Simmer for 25 minutes, stirring now and then, until the lentils are
soft. Finish with lime juice and fresh coriander.

recipe | overnight oats
In a jar, combine half a cup of rolled oats, half a cup of milk, a quarter cup of yogurt and a
teaspoon of honey. Stir well, close the lid and leave it in the fridge overnight. In the morning,
top it with berries, sliced apple or a spoonful of peanut butter. It keeps for up to two days.

recipe | a simple salad dressing
Put three tablespoons of olive oil, one tablespoon of red wine vinegar, half a teaspoon of mustard
and a pinch of salt in a small jar. Close the lid tightly and shake for about ten seconds until
the dressing turns cloudy. Taste it and add a little honey if it is too sharp. It keeps in the
fridge for a week.

recipe | roast vegetables
Heat the oven to 200 degrees. Cut two carrots, one red pepper, one courgette and a red onion into
chunks of about the same size. Toss them on a baking tray with three tablespoons of olive oil,
salt and a teaspoon of dried thyme. Roast for 35 to 40 minutes, turning once, until the edges are
brown.

recipe | soft scrambled eggs
Crack three eggs into a bowl, add a pinch of salt and whisk with a fork. Melt a knob of butter in
a non-stick pan over low heat, pour in the eggs and stir slowly with a spatula. When the eggs are
almost set but still a little wet, take the pan off the heat. Serve on toast with chopped chives.

recipe | homemade lemonade
Squeeze the juice from six lemons into a large jug; you should have about a cup of juice.
Dissolve three quarters of a cup of sugar in a cup of hot water and let it cool. Add the syrup
and five cups of cold water to the jug and stir. Serve over ice with a few mint leaves and lemon
slices.

recipe | guacamole
Cut two ripe avocados in half, remove the stones and scoop the flesh into a bowl. Mash with a
fork, leaving some lumps. Mix in half a finely chopped red onion, a chopped tomato, the juice of
one lime and a handful of coriander. Season with salt and a pinch of chili flakes and serve
straight away with tortilla chips.

recipe | yogurt flatbreads
Mix 250 grams of flour, 150 grams of plain yogurt, a pinch of salt and a teaspoon of baking powder
into a soft dough. Divide it into six balls and roll each one out thinly. Cook the flatbreads one
at a time in a hot dry pan for about a minute on each side, until they puff up and have brown
spots.

instructions | resetting a home router
To reset the router, find the small hole labeled Reset on the back panel. Press and hold the
button inside with a paper clip for ten seconds until the lights flash. Wait about three minutes
for the router to restart. Then connect to the network name printed on the sticker underneath and
use the password shown there.

instructions | checking tire pressure
Check your tires when they are cold, before you drive. Unscrew the valve cap and press the gauge
firmly onto the valve until the hissing stops. Read the number and compare it with the pressure
listed inside the driver's door. Add air if it is too low, then screw the cap back on.

instructions | what to do in a fire drill
When the alarm sounds, stop what you are doing and leave the building by the nearest exit. Do not
use the lifts and do not go back for your belongings. Walk to the assembly point in the north car
park and stand with your team. Your floor warden will take a register, and nobody may go back
inside until the fire officer says it is safe.

instructions | repotting a houseplant
Water the plant a day before repotting so the roots slide out easily. Choose a new pot about five
centimeters wider than the old one, with a drainage hole. Put a layer of fresh compost in the
bottom, set the plant in at the same depth as before, and fill in around the sides. Water it well
and keep it out of strong sun for a week.

instructions | assembling a bookshelf
Lay all the panels on a soft surface and check that you have the sixteen screws and eight wooden
pegs. Attach the two side panels to the base using four screws. Slide the back board into the
grooves, then fit the shelves onto the pegs. Finally, screw on the top panel and fix the shelf to
the wall with the bracket provided.

instructions | using a library self-checkout
Place your library card under the scanner until the screen shows your name. Put the books on the
pad one at a time, with the barcode facing up. When all the books are listed, press Finish and
choose whether you want a paper or email receipt. Remember to take your card with you.

instructions | descaling a coffee machine
Once a month, fill the water tank with equal parts white vinegar and water. Place a large mug
under the spout and run a brewing cycle without coffee. Throw the liquid away, then run two more
cycles with clean water to rinse out the vinegar. Wipe the drip tray and the outside with a damp
cloth.

instructions | jump-starting a car
Park the working car close to the one with the flat battery and switch off both engines. Connect
the red cable to the positive terminal of the flat battery, then to the positive terminal of the
good one. Attach the black cable to the negative terminal of the good battery and to a bare metal
part of the other car. Start the working car, wait a few minutes, then start the other one.

instructions | setting up a new phone
Turn the phone on by holding the side button until the logo appears. Choose your language and
connect to a Wi-Fi network. Sign in with your account, or create one if you do not have it yet.
You can then copy apps and photos from your old phone, set up a fingerprint, and choose a screen
lock PIN.

instructions | applying for a parking permit
Residents can apply for a parking permit online or at the town hall. You will need proof of
address, such as a recent utility bill, and the registration number of your car. Permits cost 60
dollars a year and are valid for one street zone only. Please allow ten working days for the
permit to arrive by post.

history | the printing press
Around 1440, Johannes Gutenberg developed a printing press in Mainz that used movable metal type.
Before this, most books in Europe were copied by hand, which was slow and expensive. Within fifty
years, printing shops had spread to more than two hundred cities, and millions of books were in
circulation. Cheaper books helped ideas travel faster and helped more people learn to read.

history | the Silk Road
The Silk Road was not a single road but a network of trade routes that linked China with Central
Asia, the Middle East and the Mediterranean. Merchants carried silk, spices, paper and porcelain
west, while horses, glass, silver and wool moved east. Along with goods, the routes spread
religions, languages, inventions and, sometimes, diseases.

history | an early public railway
The Stockton and Darlington Railway in the north of England opened in 1825. It was the first
public railway to use steam locomotives, although horses also pulled some of its wagons in the
early years. It was built mainly to carry coal from inland mines to the river, but it soon
carried passengers too.

history | a mill town's past
The town of Brackwell grew up around a wool mill built beside the river in 1790. By 1850 the mill
employed nearly a thousand workers, many of them children who worked twelve-hour days. The mill
closed in 1961, and the old building now holds flats, a cinema and a small museum about the
town's past.

history | the Great Wall of China
The Great Wall of China was built and rebuilt over many centuries by different dynasties. Most of
the sections visitors see today date from the Ming dynasty, which ruled from 1368 to 1644. The
wall was designed to protect against raids from the north, and watchtowers along it could send
signals using smoke by day and fire by night.

history | the Apollo 11 landing
On 20 July 1969, the Apollo 11 lunar module landed on the Moon. Neil Armstrong became the first
person to walk on its surface, followed about twenty minutes later by Buzz Aldrin, while Michael
Collins stayed in orbit. The astronauts collected rock samples, set up experiments and returned
safely to Earth four days later.

history | Roman aqueducts
The ancient Romans built aqueducts to carry fresh water from hills and springs into their cities.
Most of an aqueduct's length ran underground in channels, and the famous stone arches were used
only to cross valleys. Water flowed downhill the whole way, so engineers had to plan a very
gentle, steady slope over many kilometers.

history | the early telephone
In 1876 Alexander Graham Bell received a patent for the telephone, although other inventors had
been working on similar ideas. The first telephones could only connect two places joined by a
wire. Within a few decades, exchanges with human operators allowed callers to reach thousands of
different numbers in the same city.

history | the lighthouse on Gull Point
The lighthouse on Gull Point was built in 1871 after three ships were wrecked on the rocks in a
single winter. For ninety years keepers lived in the cottage at its base and climbed 114 steps
every evening to light the lamp. The light was made automatic in 1962, and today the cottage is
a small cafe for walkers.

history | the first modern Olympic Games
The first modern Olympic Games were held in Athens in 1896. About 240 athletes from fourteen
countries took part in events such as running, swimming, wrestling, cycling and gymnastics. The
marathon was added to honor an ancient Greek legend and was won by Spyridon Louis, a Greek water
carrier, which delighted the home crowd.

history | the Hanseatic League
The Hanseatic League was an alliance of merchant towns around the Baltic and North Seas that was
powerful from the thirteenth to the fifteenth century. Cities such as Lübeck, Hamburg and Bergen
worked together to protect their traders and keep trade routes safe. The league traded timber,
furs, grain, fish and cloth across northern Europe.

history | the founding of a village school
Ashgrove School opened in 1902 in a single room above a bakery, with one teacher and nineteen
pupils. Ten years later a proper school building was built with money raised by the parents.
During the war the school took in children sent from the cities, and the number of pupils
doubled. Today it has more than six hundred students.

science | photosynthesis
Plants make their own food through photosynthesis. Their leaves absorb sunlight and use its
energy to turn water and carbon dioxide into sugar, releasing oxygen as a by-product. The green
pigment chlorophyll captures the light. The sugar gives the plant energy and the building
material it needs for new leaves, stems and roots.

science | the water cycle
Water moves in a constant cycle between the land, the oceans and the air. The sun heats water in
seas and lakes, and it evaporates into vapor. As the vapor rises it cools and condenses into tiny
droplets that form clouds. When the droplets grow heavy, they fall as rain or snow, and the water
flows back to the sea through rivers and underground.

science | what causes tides
Tides are caused mainly by the pull of the Moon's gravity on the oceans. The water bulges out on
the side of Earth facing the Moon and on the opposite side, which gives most coasts two high
tides and two low tides each day. When the Sun and Moon line up, their combined pull creates
especially large tides called spring tides.

science | how vaccines train the immune system
A vaccine trains the immune system to recognize a germ without causing the disease. It contains a
weakened or inactive form of the germ, or just a piece of it, or instructions for making that
piece. The body responds by making antibodies and memory cells. If the real germ arrives later,
the immune system can fight it off quickly.

science | how volcanoes form
A volcano forms where melted rock, called magma, rises from deep inside the Earth and escapes
through the surface. Once it reaches the surface it is called lava. Some volcanoes erupt
explosively, throwing ash high into the sky, while others release lava slowly in glowing rivers.
Most active volcanoes are found along the edges of tectonic plates.

science | how sound travels
Sound is a vibration that travels as a wave through air, water or solid materials. It cannot
travel through empty space because there is nothing to carry the vibration. In air, sound moves
at about 343 meters per second, but it travels more than four times faster in water and even
faster through steel.

science | the human heart
The human heart is a muscle about the size of a fist that beats roughly one hundred thousand
times a day. It has four chambers: two atria on top and two ventricles below. The right side
pumps blood to the lungs to pick up oxygen, and the left side pumps the oxygen-rich blood out to
the rest of the body.

science | recycling aluminum cans
Aluminum can be recycled again and again without losing its quality. Making a can from recycled
aluminum uses about 95 percent less energy than making one from raw ore. A used drink can may be
melted down, rolled into new sheets and back on a shop shelf in as little as two months.

science | octopuses
Octopuses are among the most intelligent animals without a backbone. They have three hearts, blue
blood and about two thirds of their nerve cells in their arms rather than their head. They can
change the color and texture of their skin in a fraction of a second to hide from predators, and
some have been seen carrying coconut shells to use as shelters.

science | how rainbows form
A rainbow appears when sunlight shines through raindrops while the sun is behind you. Each drop
bends the light as it enters, reflects it off the back of the drop, and bends it again as it
leaves. Because each color bends by a slightly different amount, white light spreads into bands
from red on the outside to violet on the inside.

science | how yeast makes bread rise
Yeast is a tiny fungus that feeds on sugar. When yeast is mixed into bread dough, it breaks down
sugars in the flour and releases carbon dioxide gas and a little alcohol. The gas forms bubbles
that make the dough rise, and the heat of the oven kills the yeast and drives off the alcohol,
leaving a light, airy loaf.

science | what causes earthquakes
Earthquakes happen when huge blocks of the Earth's crust suddenly slip past each other along a
fault. The energy released travels outward as seismic waves, which shake the ground. Scientists
measure the size of an earthquake with the moment magnitude scale, on which each whole step
means about 32 times more energy.

dialogue | booking a restaurant table
Caller: Hello, I'd like to book a table for four on Saturday evening.
Host: Certainly. What time would you like?
Caller: Around half past seven, if possible.
Host: I have a table at seven forty-five by the window. Would that work?
Caller: Perfect. The name is Delgado.

dialogue | a customer returning running shoes
Customer: Hi, I bought these running shoes last week, but they rub on my heel.
Assistant: I'm sorry to hear that. Do you have the receipt?
Customer: Yes, here it is.
Assistant: Would you like to try a different size, or would you prefer a refund?
Customer: I'll try a half size bigger first.

dialogue | two coworkers planning a client presentation
Nadia: The client presentation is on Thursday. Can you do the slides on costs?
Ben: Sure. Do you want the numbers for this year only, or the last three years?
Nadia: The last three years, so they can see the trend.
Ben: Okay. I'll send you a draft by Tuesday afternoon.

dialogue | a patient at a pharmacy
Pharmacist: Good morning. How can I help?
Patient: I have had a sore throat and a slight fever since yesterday.
Pharmacist: Are you taking any other medicine at the moment?
Patient: No, nothing.
Pharmacist: Then I suggest these lozenges and paracetamol. If the fever lasts more than three
days, please see a doctor.

dialogue | a tourist asking for directions
Tourist: Excuse me, how do I get to the Old Harbor from here?
Local: Go straight down this street until you reach the fountain, then turn left.
Tourist: Is it far?
Local: About ten minutes on foot. You'll see the boats at the end of the road.
Tourist: Thank you so much!

dialogue | a parent asking about homework
Mum: Have you finished your homework?
Ravi: Almost. I just have the science questions left.
Mum: What are they about?
Ravi: Magnets. I have to explain why some metals stick and others don't.
Mum: Finish those and then you can go to football practice.

dialogue | the start of a job interview
Interviewer: Thanks for coming in. Could you tell me a little about yourself?
Candidate: Of course. I've worked as a sales assistant for three years, mostly in a bookshop.
Interviewer: What made you apply for this role?
Candidate: I'd like to move into marketing, and your company's campaigns have always impressed me.

dialogue | a hotel check-in
Guest: Hi, I have a reservation under the name Fischer.
Receptionist: Welcome, Mr. Fischer. You're staying two nights in a double room, is that right?
Guest: Yes. Is breakfast included?
Receptionist: It is, from seven to ten in the dining room. Here is your key card; you're in room
412.

dialogue | two friends choosing a film
Ana: What shall we watch tonight?
Leo: How about that new space film everyone's talking about?
Ana: It's nearly three hours long. Something shorter?
Leo: Fine, then the animated one about the fox. It starts at eight.
Ana: Great, I'll make popcorn.

dialogue | a call to technical support
Agent: Thank you for calling. What seems to be the problem?
Customer: My laptop won't connect to the Wi-Fi, but my phone works fine.
Agent: Have you tried restarting the laptop?
Customer: Yes, twice.
Agent: Okay, let's check whether the wireless switch is turned on. It's usually on the left side.

story | a boy flying a kite with his grandfather
On the windiest day of spring, Omar carried his new kite to the top of the hill. The first three
times he let it go, it spun and crashed into the grass. On the fourth try, his grandfather held
the string, ran a few steps and shouted, "Now!" The kite leapt into the sky, and Omar laughed as
it pulled at his hands like a living thing.

story | a baker and a stranger who takes her bread
Every evening at closing time, the baker left one loaf on the bench outside her shop. For months
she never saw who took it. Then, one rainy night, she stayed late and watched. A young woman in a
soaked coat picked up the bread, looked around, and tucked a folded drawing under the bench in
its place.

story | a lost red umbrella
Clara left her red umbrella on the tram on Monday. On Wednesday she saw a man carrying one just
like it, with the same chipped handle. She followed him for two stops, rehearsing what to say,
before he turned and held it out to her. "I've been riding this line all week," he said,
"looking for its owner."

story | an old hallway clock
The clock in the hallway had not worked for twenty years. When Grandpa died, Ellie found a tiny
key taped inside its door. She wound it slowly, and for the first time in her life she heard it
tick. At exactly midnight it chimed thirteen times, and a drawer she had never noticed slid open.

story | a snail race in a garden
The children of Pear Tree Lane held a snail race every summer. Each snail had a painted number on
its shell, and the track was a wet plank in Mrs. Abbot's garden. This year the favorite, a large
snail called Thunder, stopped halfway to eat a lettuce leaf, and a tiny snail named Pip crawled
past him to win.

story | a night train through the mountains
The night train rattled north through the mountains. In compartment nine, an old woman knitted a
long blue scarf without once looking at her needles. When the boy across from her asked who it
was for, she smiled and said, "For whoever needs it when we arrive." At dawn, the train stopped
in a village deep in snow.

story | a shy violinist at a school concert
Jonah practiced the violin every night, but only when the house was empty. At the school concert,
his hands shook so much that he almost walked off the stage. Then he spotted his little sister in
the front row, holding up a sign with his name on it in glitter. He took a breath, closed his
eyes and began to play.

story | a message in a bottle on the beach
While collecting shells, Priya found a green bottle half buried in the sand. Inside was a note
written in pencil: "If you find this, please write back." There was an address on a small island
she had never heard of. That evening she sat at the kitchen table and began her reply.

story | strangers stuck in an elevator with a parrot
The elevator stopped between the fourth and fifth floors with a soft thud. Inside were a delivery
driver, a nervous student and an elderly man with a parrot in a cage. For a long minute nobody
spoke. Then the parrot said, "Going up?" and all three of them burst out laughing.

story | a village where singing was forbidden
In the village of Lorn, an old law forbade singing after sunset. Nobody remembered why. One winter
evening a traveling girl, who did not know the rule, sang a lullaby at the inn. The villagers
froze, waiting for something terrible to happen. Instead, the lamps in every window began to glow
a little brighter.

notice | a swimming pool closing for maintenance
The Riverside Leisure Center pool will be closed from 1 to 14 August for maintenance. During this
time the gym and sauna will stay open as usual. Members with swimming-only passes will have two
weeks added to their membership at no cost. We apologize for any inconvenience.

notice | the lost property office at a station
Items found on our trains are kept at the lost property office at Central Station for 30 days.
The office is open from 8 am to 6 pm, Monday to Saturday. To collect an item, please bring photo
ID and a description of what you lost. Umbrellas and clothing are donated to charity after two
weeks.

notice | rules for the office kitchen
Please wash and put away your own cups and plates before the end of the day. Food left in the
fridge on Friday afternoon will be thrown away, so label anything you want to keep. The
dishwasher is run every evening at 6 pm. Thank you for helping keep the kitchen clean for
everyone.

notice | an open day at the allotments
This Sunday from 11 to 4, the allotments on Fern Road are open to the public. Visitors can tour
the plots, buy seedlings and homemade jam, and ask the growers for advice. Entry is free, and
children can take part in a pumpkin-painting table. Dogs on leads are welcome.

notice | a more frequent bus service
From Monday 2 April, the number 22 bus will run every fifteen minutes instead of every twenty on
weekdays. The first bus will leave the depot at 5:45 am, and the last will leave the city center
at 11:30 pm. Sunday times are not changing. Updated timetables are available at all stops and on
our website.

notice | water turned off in a block of flats
Water to all flats in Maple Court will be turned off on Wednesday between 9 am and 1 pm while
plumbers replace the main valve. Please fill a few bottles with water beforehand and avoid using
the washing machine that morning. If the work finishes early, we will let you know by text
message.

notice | a school trip to a museum
Year 5 will visit the Natural History Museum on Friday 10 May. The coach leaves school at 8:30 am
and returns by 4 pm. Children need a packed lunch, a water bottle and a raincoat. Please sign and
return the consent form, with the 12-dollar fee, by Friday 3 May.

notice | roads closed for a cycle race
The Spring Cycle Race will take place on Sunday 21 April. Between 7 am and 2 pm, High Street, Park
Avenue and the bridge will be closed to cars. Residents on these roads should move their vehicles
by 6:30 am. Spectators are welcome along the route but are asked to stay behind the barriers.

review | a busy pizza restaurant
We went to Luigi's on a Friday night and had to wait forty minutes for a table, even though we had
booked. Once the food came, though, it was excellent: thin crispy crust, fresh basil and the best
tiramisu I've had in years. The staff were friendly but clearly overworked. I'd go back, but on a
quieter evening.

review | a pair of hiking boots
I've worn these boots on four long hikes now, including two days of rain, and my feet stayed
completely dry. They needed about a week of breaking in, and the laces are a bit short. Still,
they're comfortable, the grip on wet rock is great, and for the price I'm very happy with them.

review | a disappointing seaside hotel
The room was clean and the bed comfortable, but the view from our window was of a brick wall, not
the sea as advertised. Breakfast was basic and the coffee was cold both mornings. The location is
good, five minutes from the beach, but I expected more for 180 dollars a night.

review | a language-learning app
This app has helped me practice Spanish for ten minutes every day for three months. The short
lessons are fun and the speaking exercises are useful. However, the free version shows far too
many ads, and some grammar explanations are confusing. Worth trying, but the paid version is what
makes it good.

review | a mystery novel with a weak ending
The first half of this mystery is gripping, with a clever setup and a narrator you can't quite
trust. Sadly, the ending felt rushed, and the final twist was easy to guess. The writing is
beautiful, especially the descriptions of the coastal town, so I'd still recommend it for a long
train journey.

review | a vacuum cleaner
Powerful suction, light enough to carry upstairs, and the long cable means I can do the whole
floor without changing sockets. The only downside is the noise, which scares the dog. Emptying
the container is quick and clean. After six months of daily use it still works like new.

review | a family day at a museum
The dinosaur hall is worth the trip on its own, and the kids loved the hands-on fossil area.
However, the cafe was overpriced and the queue at the entrance took nearly half an hour. Go early
on a weekday if you can. We spent four hours there and could easily have stayed longer.

review | an online web design course
The course promised to teach web design in six weeks, and it mostly delivered. The videos are
clear and the weekly projects are practical. My only complaint is that the teacher rarely
answered questions in the forum. If you can learn on your own, it's good value at 49 dollars.

bio | a potter who trained as an architect
Mariko Tanabe is a potter who lives and works in the hills outside Kelso. She trained as an
architect before taking an evening pottery class in 2009 and falling in love with clay. Her bowls
and vases, glazed in deep blues and greens, are sold in galleries in three countries. She teaches
a beginners' class every Saturday.

bio | Marie Curie
Marie Curie was a physicist and chemist born in Warsaw in 1867. She moved to Paris to study and,
with her husband Pierre, discovered the elements polonium and radium. She was the first woman to
win a Nobel Prize and remains the only person to win Nobel Prizes in two different sciences,
physics and chemistry.

bio | a chef from a fishing village
Diego Ferreira grew up in a fishing village and learned to cook in his aunt's small restaurant.
At nineteen he moved to the city and worked his way up from dishwasher to head chef in eight
years. In 2021 he opened his own restaurant, Maré, which serves seafood dishes from his childhood.
He is also writing his first cookbook.

bio | a cross-country skier who came back from injury
Hanna Virtanen is a cross-country skier from a small town in the north of Finland. She started
skiing at the age of three and won her first national title at seventeen. After a serious knee
injury in 2019 she spent a year recovering, then returned to win two medals at the world
championships. She now also coaches junior skiers.

bio | Ada Lovelace
Ada Lovelace was an English mathematician born in 1815. She worked with Charles Babbage on his
design for a mechanical computer called the Analytical Engine. In her notes she described how the
machine could follow a sequence of steps to calculate numbers, which is why many people call her
the first computer programmer.

bio | a village librarian
For forty years, Walter Brandt ran the library in the village of Ostheim almost by himself. He
knew every regular reader by name and kept a notebook of the books each child liked. When he
retired in 2018, the villagers painted a mural of him on the library wall, surrounded by his
favorite characters.
""")

KIND_LABELS = {
    "news": "a short news report",
    "product": "a product description",
    "email": "an email",
    "casual": "an informal message",
    "recipe": "a recipe",
    "instructions": "a set of instructions",
    "history": "a short history text",
    "science": "a short science explanation",
    "dialogue": "a conversation",
    "story": "a short story",
    "notice": "a public notice",
    "review": "a customer review",
    "bio": "a short biography",
}


# ---------------------------------------------------------------------------------------------
# Word-level fillers.

CONCEPTS = _lines("""
photosynthesis
compound interest
supply and demand
the greenhouse effect
machine learning
a blockchain
gravity
black holes
DNA
the immune system
evolution by natural selection
the stock market
interest rates
a mortgage
a credit score
opportunity cost
the scientific method
plate tectonics
ocean currents
the placebo effect
confirmation bias
cognitive dissonance
a democracy
the separation of powers
renewable energy
nuclear fission
electric current
magnetism
friction
momentum
time zones
leap years
solar eclipses
the food chain
an ecosystem
biodiversity
pollination
composting
the metric system
probability
negative numbers
the Pythagorean theorem
an algorithm
recursion
encryption
how the internet routes data
cloud computing
a database
an API
open-source software
a computer virus
two-factor authentication
GPS
3D printing
metabolism
calories
vitamins
sleep cycles
muscle memory
the Renaissance
the Industrial Revolution
a recession
income tax
globalization
tariffs
crowdfunding
a pension
insurance
an index fund
diversification in investing
a balance sheet
branding
the rule of thirds in photography
perspective in drawing
rhythm in music
a metaphor
irony
the hero's journey in stories
mindfulness
procrastination
emotional intelligence
active listening
body language
jet lag
altitude sickness
hibernation
bird migration
camouflage in animals
coral reefs
glaciers
hurricanes
lightning
the northern lights
acid rain
erosion
fossils
carbon dating
the periodic table
atoms
chemical reactions
acids and bases
density
buoyancy
air pressure
the Doppler effect
solar panels
wind turbines
the ozone layer
antibiotic resistance
a food allergy
inflation targeting by central banks
a bond
a spreadsheet formula
version control
a compiler
a web browser cache
artificial satellites
tidal energy
soil erosion
a carbon footprint
the water table
an electric motor
a heat pump
""")

AUDIENCES = _lines("""
a ten-year-old
a high school student
my grandmother, who has never used a computer
a busy manager
a complete beginner
someone who is learning English
a university student
a five-year-old
a new employee
a curious teenager
an engineer from another field
a visitor from another country
""")

WHY = _lines("""
do cats purr
does bread go stale
do onions make us cry
do leaves change color in autumn
does ice float on water
do we yawn
do our fingers wrinkle in the bath
is the ocean salty
do birds fly south for the winter
do we get goosebumps
does the Moon look bigger near the horizon
do stars twinkle
does metal feel colder than wood
do mosquitoes bite some people more than others
do we dream
does popcorn pop
do zebras have stripes
does time seem to pass faster as we get older
do planes leave white trails in the sky
do we have fingerprints
does soap remove grease
does the wind blow
do cars need engine oil
does coffee keep us awake
do dogs wag their tails
do we sneeze
are flamingos pink
does salt melt ice on roads
do apples turn brown after you cut them
does hot air rise
do babies sleep so much
do cities feel hotter than the countryside
do some trees lose their leaves in winter
does paper turn yellow with age
do people have different blood types
does exercise improve our mood
do owls hunt at night
do bridges have gaps called expansion joints
do people have accents
is gold so valuable
do steel ships float
do rivers bend and curve
do volcanoes erupt
does the sea look blue on a sunny day
do our ears pop on a plane
do we get hiccups
does chopped garlic smell stronger than whole garlic
do bubbles always look round
does a spoon look bent in a glass of water
do we shiver when we are cold
""")

PROCESSES = _lines("""
a refrigerator keeps food cold
the gears on a bicycle make pedaling easier
a card payment goes through
an email gets from one computer to another
a seed grows into a plant
a search engine finds web pages
a microwave oven heats food
a digital camera takes a photo
a hot-air balloon rises
a dam produces electricity
a thermostat controls the temperature of a room
coffee gets from the farm to your cup
paper is made from wood
glass is made
chocolate is made from cacao beans
cheese is made from milk
an airplane stays in the air
a lock and key work
a touchscreen senses your finger
a compass points north
tap water is cleaned before it reaches your home
a recycling plant sorts waste
a GPS receiver finds your position
a bank decides whether to give someone a loan
a letter travels through the postal system
a tree grows a new ring each year
a rechargeable battery stores energy
a caterpillar becomes a butterfly
clouds produce rain
a new law is made in a parliament
a washing machine cleans clothes
an elevator moves between floors
a pearl forms inside an oyster
a wound heals
""")

INVENTIONS = _lines("""
the bicycle
paper money
the light bulb
the steam engine
photography
the refrigerator
the airplane
antibiotics
the calendar
the magnetic compass
the mechanical clock
eyeglasses
the radio
television
the computer mouse
the smartphone
the postage stamp
the zipper
the alphabet
coins
public libraries
maps
vaccines
the umbrella
the sewing machine
the washing machine
the typewriter
canned food
the electric guitar
the shipping container
""")

LIST_SUBJECTS = _lines("""
ways to save water at home
tips for studying for an exam
fruits that are high in vitamin C
countries in South America
famous painters and one work by each
hobbies you can do at home
board games for families
ways to reduce stress
ingredients common in Italian cooking
animals that live in the Arctic
skills every new manager needs
questions to ask before adopting a dog
things to check before a long car trip
signs that a plant needs more water
ways to make a small room look bigger
benefits of learning a second language
common job interview questions
easy houseplants for beginners
foods that are good sources of protein
exercises you can do without equipment
kitchen tools every home cook should have
ways to save money on groceries
classic novels worth reading
famous bridges around the world
instruments in a symphony orchestra
ways to make a website load faster
reasons to visit a national park
safety tips for cycling in a city
vegetables that grow well in pots
things to do on your first day in a new city
ways to keep a conversation going
common English idioms and their meanings
birthday party games for children
ways to reduce plastic waste
habits for healthy teeth
types of clouds
uses for baking soda around the house
ways to stay warm in winter without turning up the heating
snacks for a long hike
tips for taking better photos with a phone
questions to ask a doctor at a check-up
things to consider when choosing a laptop
tricks for remembering names
activities for toddlers on a rainy day
features of a good resume
ways to practice gratitude
reasons a car might not start
polite ways to say no
herbs that grow well indoors
mistakes to avoid when painting a room
famous scientists and what they discovered
ways to cook on a tight budget
ways to make a long flight more comfortable
ideas for a family movie night
ways to be a better listener
tips for a first job interview by video
fun facts about the ocean
ways to use leftover bread
healthy drinks other than water
ways to welcome a new neighbor
""")

TRIPS = _lines("""
a week at the beach
a winter weekend in the mountains
a three-day business trip
a camping trip with two children
a long-haul flight
a cycling holiday
a music festival
a school trip for a ten-year-old
a short hospital stay
a ski holiday
a month of backpacking in Southeast Asia
a wedding abroad
a fishing weekend
a road trip across the desert
a weekend visiting my grandparents
a day hike in the hills
a study semester abroad
a cruise
a conference in a cold city
a sailing weekend
""")

MEAL_PLANS = _lines("""
a week of vegetarian dinners
a birthday party for ten children
a barbecue for eight people
a simple Sunday roast
a taco night for four
a week of packed lunches
a pasta dinner for two
three days of camping meals
a picnic in the park for six
a lasagna with a side salad
a curry night with friends
breakfast for overnight guests
a student's budget week
a holiday dinner for twelve
a week of quick breakfasts
""")

CHECKLIST_GOALS = _lines("""
moving to a new apartment
starting a new job
getting a house ready for winter
preparing for a new baby
launching a small website
closing up a holiday cottage for the season
the day before a job interview
hosting a dinner party
selling a used car
preparing for a power cut
setting up a home office
adopting a cat
organizing a school fundraiser
spring cleaning a kitchen
leaving the house for a two-week holiday
setting up a new laptop
planning a small wedding
starting a vegetable garden
getting a bike ready for a long ride
preparing for a camping weekend
""")

HOWTO_TASKS = _lines("""
clean a cast iron pan
fix a flat bicycle tire
make cold brew coffee
write a good cover letter
start a compost bin
back up the photos on my phone
tie a tie
get a coffee stain out of a shirt
improve my credit score
learn to touch type
teach a puppy to sit
plant tulip bulbs
make a budget spreadsheet
fix a squeaky door
prepare for a job interview
write a short speech for a wedding
organize my wardrobe
make pizza dough at home
sharpen a kitchen knife
unblock a sink without chemicals
paint a room
look after a succulent
set up a home Wi-Fi network
keep basil alive on a windowsill
meditate for five minutes
negotiate a higher salary
read more books this year
make friends in a new city
stop putting off a big project
hang a picture straight
bake chocolate chip cookies
wash a wool sweater
plan a road trip
fold a paper airplane that flies far
study for a math test
save for a holiday
eat a balanced plant-based diet
take a passport photo at home
learn the basics of chess
build a simple birdhouse
defrost a freezer
make a good first impression
give useful feedback to a coworker
clean my laptop keyboard
get rid of fruit flies in the kitchen
prepare a garden bed for planting
sound clearer on video calls
keep a journal
make yogurt at home
iron a shirt
fold a fitted sheet
make my phone battery last longer
start learning to draw
cook rice on the stove
fall asleep faster
stay focused while working from home
write a thank-you note
reduce my screen time
grow tomatoes from seed
clean windows without streaks
build a simple personal website
teach a child to ride a bike
start a book club
brew loose-leaf tea
start a podcast
learn a new language as an adult
keep cut flowers fresh for longer
pack a suitcase efficiently
remove rust from garden tools
choose a ripe melon
change a car's windscreen wipers
make a simple bread without yeast
calm down before an exam
write a clear bug report
""")

COMPARE_PAIRS = _pairs("""
a laptop | a desktop computer
renting a home | buying one
tea | coffee
running | swimming
Python | JavaScript
a credit card | a debit card
e-books | paper books
cats | dogs as pets
solar power | wind power
living in a city | living in the countryside
baking | frying
a hurricane | a tornado
weather | climate
a virus | a bacterium
a crocodile | an alligator
a lake | a pond
a university | a college
HTTP | HTTPS
memory (RAM) | storage
an LED bulb | an old incandescent bulb
yoga | pilates
a frog | a toad
a sprint | a marathon
a hybrid car | a fully electric car
butter | margarine
a violin | a viola
an ocean | a sea
a comet | an asteroid
a rabbit | a hare
a freelancer | an employee
a podcast | a radio show
a novel | a short story
a mountain bike | a road bike
a gas stove | an induction hob
Spanish | Portuguese
working from home | working in an office
a map | a GPS app
a shower | a bath
tap water | bottled water
a savings account | an investment fund
a bus | a tram
a mentor | a coach
a goal | a habit
a weed | a wildflower
a simile | a metaphor
a list | a tuple in Python
an apartment | a house
a watch | a fitness tracker
jam | jelly
a cold | the flu
""")

CHOICES = _pairs("""
a laptop | a tablet | a student who writes a lot of essays
a bicycle | an electric scooter | a five-kilometer commute
a gas grill | a charcoal grill | weekend barbecues
a cat | a dog | someone who works long hours
a paper planner | a calendar app | a busy parent
Python | JavaScript | a first programming language
a road bike | a hybrid bike | riding to work on city streets
a hostel | a hotel | a solo traveler on a budget
a Kindle | paper books | reading on the beach
a French press | an espresso machine | a small kitchen
a gym membership | home workouts | someone with little free time
a train | a car | a 400-kilometer trip with two children
a cast iron pan | a non-stick pan | a beginner cook
a standing desk | a normal desk | someone with back pain
a small dog | a large dog | a family in a flat
a used car | a new car | a first-time driver
spreadsheets | a database | a small shop's stock list
a tent | a camper van | a two-week summer holiday
online classes | evening classes | learning a language while working full time
a savings account | paying off a loan early | someone with some spare cash each month
""")

CODE_LANGUAGES = _lines("""
Python
JavaScript
TypeScript
Go
Rust
Java
C#
Ruby
C++
Kotlin
""")

CODE_TASKS = _lines("""
reverses the words in a sentence
counts how many vowels a string contains
finds the largest number in a list
removes duplicate items from a list while keeping their order
converts a number of seconds into hours, minutes and seconds
tests whether a year is a leap year
computes the factorial of a number
generates the first n Fibonacci numbers
merges two sorted lists into one sorted list
counts how often each word appears in a text
capitalizes the first letter of every word
tests if a number is prime
flattens a nested list
finds the second largest value in a list
rotates a list by k positions
validates a simple email address
converts a Roman numeral to an integer
converts an integer to binary without using built-in helpers
computes the greatest common divisor of two numbers
splits a list into chunks of size n
reads a CSV file and prints how many rows it has
gives the n most common characters in a string
tells whether two strings are anagrams
removes all punctuation from a string
finds the longest word in a sentence
adds up the digits of an integer
converts a temperature from Fahrenheit to Celsius
calculates compound interest for a number of years
shuffles a deck of cards
simulates rolling two dice a thousand times
pads a number with leading zeros
groups a list of words by their first letter
finds all pairs in a list that add up to a target
implements binary search on a sorted list
sorts a list of dictionaries by a given key
counts the lines in a text file
converts a string to snake_case
masks all but the last four digits of a card number
calculates the distance between two points
builds a multiplication table as a nested list
tells whether the brackets in a string are balanced
finds the missing number in a list of 1 to n
compresses a string like aaabb into a3b2
gives the items two lists have in common
calculates a person's age from their date of birth
turns a dictionary into a URL query string
removes empty strings from a list
shortens a string to a maximum length and adds an ellipsis
finds the first character that appears twice in a string
generates a random password of a given length
computes the median of a list of numbers
transposes a matrix
tells whether a list is already sorted
counts the words in a string
implements a simple stack with push and pop
converts kilometers to miles
finds the longest common prefix of a list of strings
formats a price with two decimal places and a currency sign
interleaves two lists
checks a password for length, digits and capital letters
keeps every third element of a list
replaces every vowel in a string with an asterisk
counts the capital letters in a string
works out the day of the week for a given date
adds up the total price of the items in a shopping cart
""")

CODE_CONCEPTS = _lines("""
list comprehensions
recursion
closures
async and await
exceptions
classes and objects
inheritance
dictionaries
generators
decorators
lambda functions
string formatting
unit tests
variable scope
pointers
interfaces
immutable data
hash maps
while loops
default function arguments
regular expressions
reading and writing files
enums
type hints
higher-order functions
sets
slicing
callbacks
parsing JSON
iterators
""")

SQL_TASKS = _pairs("""
employees | id, name, department, salary, hire_date | finds the average salary in each department
employees | id, name, department, salary, hire_date | lists the people hired in 2023, newest first
employees | id, name, department, salary, hire_date | gives the three highest-paid people in the Sales department
employees | id, name, department, salary, hire_date | counts how many employees each department has
orders | id, customer_id, order_date, total | adds up the revenue for each month
orders | id, customer_id, order_date, total | lists customers who placed more than three orders
orders | id, customer_id, order_date, total | finds the largest order of each customer
orders | id, customer_id, order_date, total | shows the orders placed in the last seven days
books | id, title, author, year, price | lists the books by one author sorted by year
books | id, title, author, year, price | finds the average price of books published after 2010
books | id, title, author, year, price | counts the books per author
books | id, title, author, year, price | finds the cheapest book in the table
students | id, name, class, grade | finds the top student in each class
students | id, name, class, grade | counts how many students got a grade above 80
students | id, name, class, grade | lists the classes whose average grade is below 60
products | id, name, category, price, stock | lists the products that are out of stock
products | id, name, category, price, stock | finds the most expensive product in each category
products | id, name, category, price, stock | raises every price in the Toys category by 10 percent
products | id, name, category, price, stock | counts the products in each category
flights | id, origin, destination, departure_time, seats_free | lists flights from Oslo to Rome that still have free seats
flights | id, origin, destination, departure_time, seats_free | counts the flights to each destination
flights | id, origin, destination, departure_time, seats_free | finds the earliest flight of each day
""")

SHELL_TASKS = _lines("""
find all files larger than 100 MB in my home folder
count the lines in every .txt file in a folder
rename all .jpeg files in a folder to .jpg
see which process is using port 8080
compress a folder into a .tar.gz archive
search for the word TODO in all Python files
show how much disk space each folder uses
list the ten most recently changed files
delete all empty folders under the current one
download a file from a URL
watch the end of a log file as it grows
replace one word with another in every line of a file
find my computer's IP address
copy a folder to a remote server
sort a file and remove duplicate lines
make a script executable
time how long a command takes
create a new Git branch and switch to it
undo the last Git commit but keep the changes
see the differences between two text files
""")

REGEX_TARGETS = _lines("""
a phone number written like 555-123-4567
a date written as YYYY-MM-DD
a simple email address
a hex color code such as #1a2B3c
a word that starts with a capital letter
a five-digit postal code
a time in 24-hour format like 18:45
a URL that starts with https
a string made only of letters and digits
the same word repeated twice in a row
a price written like $12.99
an IPv4 address
a hashtag such as #summer2024
a line that ends with a question mark
a number with an optional decimal part
""")

ERRORS = _lines("""
TypeError: 'NoneType' object is not subscriptable
IndexError: list index out of range
KeyError: 'name'
ModuleNotFoundError: No module named 'requests'
ZeroDivisionError: division by zero
UnboundLocalError: local variable 'count' referenced before assignment
TypeError: can only concatenate str (not "int") to str
AttributeError: 'list' object has no attribute 'split'
RecursionError: maximum recursion depth exceeded
FileNotFoundError: [Errno 2] No such file or directory: 'data.csv'
Uncaught TypeError: Cannot read properties of undefined (reading 'length')
ReferenceError: total is not defined
error: failed to push some refs to 'origin'
fatal: not a git repository (or any of the parent directories): .git
ValueError: invalid literal for int() with base 10: 'abc'
IndentationError: expected an indented block
json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)
PermissionError: [Errno 13] Permission denied: 'output.txt'
""")

SITUATIONS = _lines("""
I just moved to a new city and don't know anyone.
My roommate never does the dishes.
I have a job interview tomorrow and I'm nervous.
I keep waking up at 3 am and can't fall back asleep.
My team at work missed an important deadline.
I want to ask for a raise but don't know how to bring it up.
My friend forgot my birthday and I feel hurt.
I have far too many tasks and don't know where to begin.
I'm giving my first presentation in English next week.
My neighbor's dog barks all night.
I spend too much money on takeaway food.
I have two job offers and can't decide between them.
I failed my driving test for the second time.
I want to eat healthier but I love sweets.
My parents want me to study law, but I love art.
My in-laws are staying with us for a week.
I get bored at my desk job.
I've been learning the piano for a year and feel stuck.
My coworker takes credit for my ideas.
I'm retiring next year and worry about being bored.
I want to start a small business selling candles.
My teenager spends all day on their phone.
I have a long flight next week and I'm afraid of flying.
I need to tell my boss that I made a mistake.
I want to get back into reading.
My garden is full of slugs.
I find it hard to say no to people.
My best friend is moving abroad.
I have an exam in three days and haven't started studying.
I forget people's names right after meeting them.
My flat is always messy.
I want to run a half marathon next year.
I'm starting university next month.
I'm cooking dinner for a guest with a nut allergy.
My cat scratches the sofa.
I feel tired every afternoon around three.
I got a disappointing performance review.
I have to give a speech at my sister's wedding.
I want to learn to code but don't know which language to pick.
I have a tiny balcony and want to make it nicer.
I'm about to adopt a rescue dog.
My phone storage is always full.
I'd like to volunteer but don't know where.
I moved to a northern country and find the dark winters hard.
I have a ten-hour drive tomorrow.
I want to write a novel but never finish anything.
My kids argue every morning before school.
I want to surprise my partner for our anniversary.
I need to cut my monthly spending by 200 dollars.
My old laptop is very slow and I can't afford a new one.
""")

RECOMMENDATIONS = _lines("""
a good book for a long flight
a board game for four adults
a houseplant that survives neglect
a simple dinner I can cook in fifteen minutes
a cheap weekend hobby
a film for a family night
a stretching routine for office workers
a first pet for a seven-year-old
a warm drink that isn't coffee
a dessert that needs no oven
a day trip idea near the sea
a song to play at a friend's wedding
some music to help me concentrate
a game to play on a long car ride
a card game for two players
a dish to bring to a potluck
a budget-friendly date idea
a fun science experiment for kids
a camera for a beginner
an indoor sport for the winter
a podcast topic for my commute
a way to learn five new words a day
a breakfast that keeps me full until lunch
a gentle exercise for someone over seventy
a relaxing activity for a Sunday evening
""")

GOOD_THINGS = _lines("""
a good teacher
a good neighbor
a good manager
a good first date
a good book title
a good team meeting
a good city park
a good friend
a good presentation
a good logo
a good apology
a good morning routine
a good travel companion
a good website
a good story ending
a good coffee shop
a good birthday party
a good job interview answer
a good password
a good photograph
""")

FACT_TOPICS = _lines("""
octopuses
volcanoes
the human brain
penguins
the Sahara desert
honey
the Eiffel Tower
Saturn
bamboo
sharks
the Amazon river
chocolate
the Pacific Ocean
owls
glaciers
bananas
the Roman Empire
lightning
elephants
coffee
the Great Barrier Reef
hummingbirds
the Arctic
ants
Mars
cheese
the human skeleton
jellyfish
rainforests
the Great Wall of China
""")

JOKE_TOPICS = _lines("""
computers
vegetables
math
the weather
school
coffee
dinosaurs
pirates
penguins
bakers
libraries
socks
gardening
space
music
teachers
trains
cheese
cats
the ocean
""")

GOALS = _lines("""
exercise after work
study in the evenings
clean my flat
drink more water
finish my thesis
wake up earlier
practice the piano
cook at home instead of ordering food
save money every month
write a little every day
learn a new language
look for a new job
call my grandmother more often
go to bed on time
tidy my garage
""")

MAIL = _pairs("""
my manager | ask for next Friday off
my manager | suggest moving our weekly meeting to Tuesdays
my manager | explain that a report will be two days late
a client | send a project update and ask for feedback
a client | apologize for a delayed delivery
a client | thank them for their business at the end of the year
my landlord | report a leak under the kitchen sink
my landlord | give notice that I will move out in two months
my child's teacher | ask for a meeting about reading progress
a hotel | ask whether early check-in is possible
a hotel | request a quiet room away from the lift
a new colleague | welcome them and offer to show them around
my team | announce the date of the summer party
my team | remind them about the new expense policy
my team | thank them after a successful product launch
a supplier | ask for a quote for 200 printed T-shirts
a customer | confirm that their order has shipped
a customer | respond to a complaint about a damaged parcel
my neighbor | invite them to a small garden barbecue
a recruiter | follow up after an interview last week
a recruiter | politely decline a job offer
a professor | ask to join their research project
the HR department | ask how many vacation days I have left
my doctor's office | move an appointment to next week
a wedding venue | ask about prices for a party of eighty guests
the city council | report a broken streetlight on my road
an old friend | get back in touch after several years
a conference organizer | ask whether there is a student discount
my book club | suggest the next book we read
a plumber | ask for a quote to replace a boiler
a car garage | book a service for next week
my gym | cancel my membership
a bakery | order a birthday cake for Saturday
a museum | book a guided tour for a school group
a former boss | ask for a reference letter
my sports club | offer to help at the summer tournament
a software company | report a bug in their app
an online shop | ask how to return a jacket that is too small
a moving company | ask for a quote to move a two-bedroom flat
a university admissions office | ask about the application deadline
my coworkers | tell them that I am leaving the company
a guest speaker | invite them to talk at our event
a translator | ask for a price to translate a ten-page document
""")

TEXT_PURPOSES = _lines("""
tell a friend I'm running ten minutes late
invite a friend to the cinema on Friday
wish a friend good luck with an exam
thank a friend for helping me move
ask a friend to give back a book I lent them
congratulate a friend on their new baby
remind my brother about Mum's birthday
cancel lunch plans politely
ask my neighbor to water my plants while I'm away
tell my family I got the job
ask my partner to pick up bread on the way home
check that a friend got home safely
invite my team to drinks after work
tell my landlord the repair person can come on Monday
say sorry to a friend for missing their party
""")

COMPLAINTS = _pairs("""
an airline | a suitcase that is still missing ten days after my flight
a phone company | being charged twice for the same month
a restaurant | a long wait and a cold meal
a furniture shop | a table that arrived badly scratched
the local council | rubbish that has not been collected for three weeks
a gym | broken showers that have not been fixed for a month
a train company | a cancelled train with no announcement
an internet provider | a connection that drops every evening
a hotel | a noisy room and a broken air conditioner
an online shop | a refund that has not arrived after a month
a car rental firm | an unfair charge for a scratch that was already there
a letting agency | a deposit that was never returned
a cinema | a film that stopped halfway through
a delivery company | a parcel left outside in the rain
a school | the lack of a safe crossing outside the gate
""")

CHARACTERS = _lines("""
an old tailor
a shy librarian
a young astronaut
a retired detective
a clumsy wizard
a street musician
a grumpy baker
a lonely whale
a brave mouse
a time traveler
a clever fox
a village postman
a friendly ghost
a ten-year-old inventor
a night-shift nurse
an elderly gardener
a young chef
a school bus driver
a mountain guide
a pair of twins
a talking tree
a nervous knight
a tiny dragon
a deep-sea diver
a circus acrobat
a beekeeper
a taxi driver
a small owl
a homesick penguin
a forgetful king
an apprentice clockmaker
a stray dog
a polar bear
an old farmer
a teenage hacker
a museum guard
a snowman
an old fisherman
a girl with a red scooter
a retired opera singer
""")

STORY_EVENTS = _lines("""
finds a map hidden in a library book
wakes up able to understand animals
gets lost in a big city at night
must deliver a letter before sunrise
wins a contest by accident
discovers a door that wasn't there yesterday
befriends the neighbor nobody likes
loses their voice the day before a big performance
plants a seed that grows overnight
finds an old photograph of themselves
has to cross a frozen lake
gets a package with no name on it
swaps lives with a house cat for a day
builds a machine that makes rain
tries to save the town festival
meets their future self
is the last one awake in a snowed-in town
finds a coin that can talk
tries to win back a lost friend
trains for a race nobody thinks they can win
searches for a missing birthday cake
keeps a secret from the whole village
opens a tiny shop that sells only buttons
follows a trail of glowing footprints
notices that the stars have gone out
gets stuck on a train that never stops
learns to swim at the age of seventy
finds a bird with a message tied to its leg
has to cook dinner for a king
sails to an island that appears once a year
wakes up in a world without color
teaches a class of very unusual students
chases a runaway balloon across town
starts a band with three strangers
enters a book through a library card
finds out their houseplant can sing
has to choose between two wishes
repairs a broken music box
spends a night in a museum after closing time
invents a brand-new holiday
""")

SETTINGS = _lines("""
an underwater city
a quiet fishing village
a busy train station
a space station orbiting Jupiter
a desert market at dawn
an abandoned amusement park
a floating island
a snowy mountain cabin
a rainy city street at night
a library that never closes
a bakery at four in the morning
a temple deep in the jungle
a school on the Moon
a night market full of lanterns
a castle made of ice
a crowded city bus
an old attic full of boxes
a sunflower field in August
a tiny island with one tree
a tea house in the mountains
a hospital waiting room
a village where it always rains
a secret garden behind a wall
a harbor at sunrise
a hot-air balloon above the clouds
a roadside diner at midnight
a futuristic city with flying trams
a lighthouse on a cliff
a greenhouse full of strange plants
a bookshop in an old church
""")

POEM_SUBJECTS = _lines("""
the smell of rain
a grandmother's kitchen
a long train journey
the last day of summer
a lost glove
a cup of morning coffee
friendship
learning to ride a bike
a thunderstorm
the stars over the desert
an old oak tree
city traffic
a quiet library
the ocean at dawn
moving to a new home
a cat asleep in the sun
homework
Monday mornings
the first day of spring
a garden after rain
a mountain lake
a busy kitchen
an empty playground
snowflakes on a window
an old bicycle
turning ten years old
the wind in the trees
fireflies in June
a rainy Sunday
a balloon floating away
the harvest moon
a fruit market in the morning
an old photograph
the sound of waves
a letter from far away
a bakery at dawn
growing older
a pair of worn-out boots
a river in spring
hope
a violin
a family dinner
the color blue
a winter morning
a bus stop in the rain
""")

POEM_FORMS = _lines("""
haiku
limerick
short rhyming poem
four-line poem
free-verse poem
acrostic poem
sonnet
poem of two short stanzas
poem for small children
""")

GENRES = _lines("""
mystery
science fiction
fantasy
romance
adventure
historical
ghost
comic
detective
fairy-tale
""")

DIALOGUE_TOPICS = _lines("""
where to go on holiday
a broken vase
whether to adopt a dog
the best pizza topping
a surprise party
a lost key
who ate the last cookie
a strange noise in the attic
learning to drive
moving to another city
what to name a boat
a missing library book
a recipe that went wrong
a secret map
the school play
planting a garden
a very long queue
an unexpected letter
""")

RIDDLE_ANSWERS = _lines("""
a shadow
an umbrella
a candle
a clock
a key
an echo
a map
a mirror
a towel
footsteps
a piano
a river
a book
a pencil
an egg
a sponge
a cloud
a staircase
a teapot
a needle
a bicycle
a secret
time
a keyboard
a window
""")

LANGUAGES = _lines("""
French
Spanish
German
Italian
Portuguese
Dutch
""")

EN_SENTENCES = _lines("""
Could you tell me where the nearest pharmacy is?
I would like to book a room for two nights.
My sister works as a nurse in a big hospital.
We forgot to buy milk, so there is no coffee this morning.
The concert starts at eight, but the doors open at seven.
Please close the window; it is getting cold.
I have lived in this town for almost ten years.
How much does a ticket to the airport cost?
The children played in the garden until it got dark.
Do you know a good restaurant near the river?
I am sorry, but I do not understand the question.
Our train was delayed by forty minutes.
She reads a chapter of her book every night before bed.
Can I pay by card, or only in cash?
It rained all weekend, so we stayed at home and played cards.
The meeting has been moved to Thursday afternoon.
My grandfather grows tomatoes and beans in his garden.
Excuse me, is this seat free?
I need a new pair of shoes for the winter.
We are going to visit our cousins next summer.
The shop on the corner sells fresh bread every morning.
What time does the last bus leave?
He always forgets where he left his keys.
I would like a glass of water, please.
The library is closed on Sundays.
Thank you very much for your help yesterday.
My phone battery is almost empty.
The soup is too hot to eat right now.
Could you speak a little more slowly, please?
We walked along the beach and collected shells.
I am allergic to peanuts.
The teacher gave us a lot of homework today.
Is there a bank near here?
They got married in a small church by the lake.
My favorite season is spring because the flowers come back.
I started learning to play the piano last year.
Please turn left at the second traffic light.
The cat is sleeping on the sofa again.
Our neighbors have three children and a big dog.
I lost my umbrella on the bus.
How long does it take to walk to the old town?
This jacket is too big for me; do you have a smaller size?
We need to leave early tomorrow morning.
The film was much better than the book.
I usually drink tea with lemon in the afternoon.
The museum is free on the first Sunday of the month.
My brother and I are planning a trip to the mountains.
The doctor told me to rest for a few days.
It is my birthday next Tuesday.
There are fifteen students in my class.
The bakery closes at six in the evening.
She speaks three languages fluently.
Dinner is ready, so please wash your hands.
We saw a rainbow after the storm.
My office is on the fourth floor.
The river freezes every winter.
I will call you when I arrive at the hotel.
Where can I buy a map of the city?
""")

FOREIGN_SENTENCES = _lines("""
Nous avons rendez-vous devant la gare à midi.
Mon frère habite à Lyon depuis trois ans.
Il fait froid ce matin, prends ton manteau.
Est-ce que vous avez une table pour deux personnes ?
J'ai oublié mon parapluie dans le train.
Les enfants jouent dans le jardin après l'école.
Pouvez-vous m'aider à porter cette valise ?
Mañana vamos a visitar a mis abuelos en el campo.
¿Dónde está la parada del autobús?
Me gusta leer antes de dormir.
La tienda cierra a las ocho de la noche.
Mi hermana estudia medicina en Madrid.
Hace mucho calor hoy; vamos a la piscina.
¿Puedes pasarme la sal, por favor?
Hemos comprado pan, queso y fruta para la excursión.
Ich trinke jeden Morgen eine Tasse Kaffee.
Wir haben am Wochenende einen langen Spaziergang gemacht.
Das Restaurant ist heute leider geschlossen.
Meine Tochter lernt in der Schule Englisch.
Es regnet schon den ganzen Tag.
Vorrei un gelato al cioccolato, per favore.
Il treno per Roma parte alle nove.
Abbiamo passato le vacanze al mare.
Quanto costa questo libro?
Eu gosto muito de caminhar na praia.
O jantar está pronto?
Amanhã vou trabalhar de casa.
Ik fiets elke dag naar mijn werk.
Waar kan ik een kaartje kopen?
""")

WORDS = _lines("""
library
butterfly
kitchen
umbrella
friendship
mountain
breakfast
grandmother
airport
strawberry
bicycle
happiness
window
pharmacy
neighbor
cloud
key
birthday
river
cheese
homework
tired
beautiful
to travel
to remember
quickly
yesterday
bridge
village
winter
ticket
hospital
spoon
garden
newspaper
doctor
""")

PHRASES = _pairs("""
French | bon appétit
French | c'est la vie
French | joie de vivre
French | déjà vu
Spanish | mi casa es su casa
Spanish | poco a poco
Spanish | buen provecho
Spanish | sobremesa
German | Gesundheit
German | Feierabend
German | Schadenfreude
Italian | dolce far niente
Italian | buon viaggio
Italian | in bocca al lupo
Portuguese | saudade
Dutch | gezellig
""")

READING_QUESTIONS = _lines("""
What is the main point of this text?
Who or what is this text mainly about?
What happens first, and what happens last?
Who is this text written for?
Is the tone formal or informal? Give an example from the text.
What is one thing the text does not explain?
Which sentence holds the most important information?
What is the purpose of this text?
Which numbers appear in the text, and what do they describe?
What would be a good question to ask the author of this text?
""")

REVIEW_LINES = _lines("""
The battery lasts all day and the screen is gorgeous.
It broke after two uses and customer service never replied.
Nice design, but it is much smaller than the photos suggest.
Delivery was quick and the packaging was perfect.
The food was cold and the waiter ignored us for twenty minutes.
Honestly the best pair of jeans I have ever owned.
Works as described. Nothing special, nothing wrong.
The instructions were confusing, but once built the desk is sturdy.
Far too expensive for what you get.
My kids play with it every day; worth every penny.
The hotel staff went out of their way to help us.
Comfortable seats, terrible sound system.
I returned it the next day.
It smells strange and the color faded after one wash.
A lovely little cafe with friendly staff and great cakes.
The app crashes every time I try to upload a photo.
Not bad for the price, though the handle feels cheap.
I've recommended this to all my friends.
The plot was slow but the ending made up for it.
Arrived late, but the seller refunded the shipping without my asking.
The tour guide was funny and knew so much about the city.
Tastes like cardboard.
Easy to set up and it just works.
Great idea, poor execution.
The room was spotless and the view was breathtaking.
Too loud to use at night, but it cleans well.
Five stars for the coffee, one star for the service.
I wanted to love it, but it gave me a headache after ten minutes.
Solid build quality and a two-year warranty. Happy customer.
The class was well organized, although the room was too hot.
Exactly what I needed for my camping trip.
The paint started peeling within a week.
Cheap, cheerful and surprisingly durable.
The concert was amazing until the power went out.
Customer support solved my problem in five minutes.
""")

HEADLINES = _lines("""
Local team wins championship after penalty shootout
Scientists discover new species of frog in mountain forest
Stock markets fall as oil prices rise
New smartphone promises two-day battery life
Parliament votes to lower the voting age
Heavy snow expected across the north this weekend
Study links daily walks to better sleep
Film about a jazz pianist wins top festival prize
Startup raises 20 million dollars to build electric boats
City marathon breaks participation record
Astronomers spot a comet visible without a telescope
Doctors recommend less salt in school lunches
Popular singer announces world tour
Minister resigns after budget dispute
Coffee chain to open 50 new stores
Flood warnings issued for three river towns
Software update fixes security flaw in home routers
Veteran goalkeeper retires after 20 seasons
Researchers turn plastic waste into fuel
Museum exhibition of ancient jewelry opens
Rising rents push families out of the city center
Hospital trials robot to deliver medicine
Heatwave leads to record electricity demand
Election debate focuses on public transport
Vaccine study shows strong results in older adults
Car maker recalls 10,000 vehicles over brake fault
New app helps farmers predict frost
Underdog cyclist wins mountain stage
Town celebrates 500th anniversary with street parade
Chip shortage delays launch of new games console
""")

STATEMENTS = _lines("""
Water freezes at 0 degrees Celsius.
Summer is the best season of the year.
Canberra is the capital of Australia.
Cats make better pets than dogs.
The Pacific is the largest ocean on Earth.
Jazz is more interesting than pop music.
A week has seven days.
Homework should be banned.
Mount Everest is the highest mountain above sea level.
Chocolate ice cream is the tastiest flavor.
An adult human skeleton has 206 bones.
Remote work is better for everyone.
Insects have six legs.
Learning Latin is a waste of time.
The Earth orbits the Sun about once every 365 days.
Rainy days are depressing.
Light travels faster than sound.
Breakfast is the most important meal of the day.
Shakespeare wrote Hamlet.
Modern art is hard to understand.
Bananas contain potassium.
Everyone should learn to cook.
Electric cars are the future of transport.
Antarctica is colder than the Arctic.
This city has the best pizza in the country.
Bats are mammals.
Reading on paper is more relaxing than reading on a screen.
Football is the most exciting sport to watch.
""")

NAME_TARGETS = _lines("""
a coffee shop near a university
a podcast about gardening
a golden retriever puppy
a fantasy kingdom
a small secondhand bookshop
a cycling club
a team of volunteers who clean beaches
an app that tracks how much water you drink
a pet hamster
a taco food truck
a newsletter for parents
a board game about pirates
a yoga studio
a family sailing boat
a handmade soap business
a pub quiz team
a video channel about budget travel
a new kind of apple
a dragon in a children's book
a neighborhood choir
a hiking trail
a weekly cooking class
a knitting group
a vegetarian restaurant
a charity fun run
a spaceship in a science fiction story
a garden cafe
a tutoring service for math
a bike repair shop
a music festival in a forest
""")

IDEA_TARGETS = _lines("""
a rainy Saturday with kids
a team-building day at work
a school fundraiser
a blog about cooking on a budget
a ten-year-old's birthday party
using up leftover rice
decorating a small bedroom
a science project with things from the kitchen
a short film with friends
a date night at home
a New Year's resolution that sticks
reusing glass jars
a community event in the park
keeping kids busy on a long flight
a themed dinner party
an end-of-year gift for a teacher
a weekend project in the garden
making my commute more enjoyable
a photography project
a small business I can run from home
a get-well-soon package
a history lesson students will enjoy
a homemade holiday card
a family reunion activity
a five-minute workout
reusing old T-shirts
a short story plot
celebrating a coworker's promotion
a summer reading challenge
a quiet evening without screens
""")

GIFT_PEOPLE = _lines("""
a friend who loves cooking
my grandfather, who enjoys crosswords
a coworker I don't know well
a ten-year-old who loves space
a teenager who plays video games
my sister, who just moved into her first flat
a neighbor who watered my plants
a teacher who is retiring this year
someone who likes hiking
a new dad
a friend recovering from an operation
a couple getting married
a coffee lover
a friend who has everything
a child starting school
a keen gardener
someone who works from home
a music fan
my host family abroad
my boss at the end of the year
""")

ASK_TARGETS = _lines("""
at the end of a job interview
a new doctor
a landlord before renting a flat
a tour guide
my grandparents about their childhood
a teacher at a parents' evening
a mentor
a new roommate
a wedding photographer
a financial advisor
someone on a first date
a seller when buying a used car
a vet about a new puppy
my new team at our first meeting
an author at a book reading
a builder before they start work
a university on an open day
a babysitter before hiring them
a personal trainer
a scientist who studies the climate
""")

PERSONAS = _lines("""
You are a friendly cooking assistant. Keep your answers short and practical.
You are a patient math tutor for middle-school students. Explain each step.
You are a customer support assistant for an online bookshop called Pagewise. Be polite and helpful.
You are a travel guide who gives concise, practical tips.
You are a helpful assistant. Answer in at most three sentences.
You are a writing coach who gives kind, specific feedback.
You are a helpful assistant that always answers with a bulleted list.
You are an experienced programmer. Include short code examples when they help.
You are a cheerful pirate who loves to help. Talk like a pirate.
You are a kindergarten teacher explaining things to small children.
You are an assistant at a hardware store. Recommend tools and materials.
You are a formal assistant. Always answer in polite, formal English.
You are a science communicator who explains ideas with everyday analogies.
You are a gardening expert for people with small balconies.
You are a calm, supportive wellbeing coach.
You are a concise assistant. Give the answer first, then one sentence of explanation.
""")

# Members of simple groups, for continue/sort/classify tasks built from the RNG.
GROUPS = {
    "fruits": _lines("apple\npear\nmango\nplum\ncherry\nkiwi\npeach\ngrape\nlemon\napricot\nfig\nmelon"),
    "vegetables": _lines("carrot\nonion\nleek\nspinach\nbroccoli\ncabbage\npotato\npepper\ncucumber\ncelery\nradish\npea"),
    "mammals": _lines("whale\nbat\nhorse\ndolphin\ntiger\nrabbit\ncamel\notter\nsquirrel\ngoat"),
    "birds": _lines("eagle\nsparrow\nowl\npenguin\nparrot\nswan\nrobin\nheron\ncrow\nflamingo"),
    "musical instruments": _lines("violin\nflute\ntrumpet\ndrum\ncello\nharp\nclarinet\npiano\nguitar\noboe"),
    "kitchen utensils": _lines("whisk\nladle\ngrater\nspatula\ncolander\npeeler\nrolling pin\nsieve\ntongs\ncorkscrew"),
    "sports": _lines("tennis\nrugby\ngolf\nhockey\nvolleyball\nrowing\nfencing\nbadminton\narchery\nbasketball"),
    "European countries": _lines("Portugal\nNorway\nPoland\nGreece\nIreland\nAustria\nFinland\nBelgium\nCroatia\nHungary"),
    "Asian countries": _lines("Japan\nVietnam\nNepal\nThailand\nIndia\nMongolia\nMalaysia\nLaos\nBhutan\nCambodia"),
    "colors": _lines("crimson\nteal\namber\nlavender\nolive\nmaroon\nturquoise\nbeige\ncoral\nindigo"),
    "jobs": _lines("plumber\narchitect\nnurse\npilot\nbaker\nlawyer\nelectrician\nteacher\nchef\ndentist"),
    "tools": _lines("hammer\nscrewdriver\nwrench\nsaw\ndrill\npliers\nchisel\nspirit level\ntape measure\nsander"),
    "trees": _lines("oak\nbirch\nmaple\npine\nwillow\nbeech\ncedar\nash\nelm\nchestnut"),
    "metals": _lines("iron\ncopper\nzinc\nsilver\ntin\nnickel\naluminum\nlead\ngold\ntitanium"),
    "clothes": _lines("scarf\njacket\nsweater\nsock\nglove\nshirt\nskirt\ncoat\nbelt\nhat"),
    "flowers": _lines("tulip\ndaisy\nrose\nlily\npoppy\norchid\niris\nsunflower\nviolet\npeony"),
    "insects": _lines("beetle\nant\nmoth\nwasp\nbee\nladybird\ndragonfly\ngrasshopper\nbutterfly\nmosquito"),
    "rivers": _lines("Nile\nDanube\nAmazon\nMississippi\nThames\nRhine\nYangtze\nGanges\nVolga\nMekong"),
    "cities": _lines("Lisbon\nNairobi\nToronto\nOsaka\nLima\nCairo\nOslo\nMelbourne\nHanoi\nDublin"),
    "board games": _lines("chess\ncheckers\nbackgammon\nScrabble\nGo\ndominoes\nmahjong\nmancala\nludo\nsnakes and ladders"),
}

FIRST_NAMES = _lines("""
Amara
Ben
Chloe
Dmitri
Elena
Farid
Grace
Hiro
Isla
Jamal
Kofi
Lena
Mateo
Nadia
Oscar
Priya
Quinn
Rosa
Sami
Tara
Umar
Vera
Wei
Ximena
Yusuf
Zoe
Aiden
Bianca
Carlos
Daria
Emil
Fatima
Gabriel
Hana
Ivan
Julia
Kenji
Leila
Marco
Noor
""")

LAST_NAMES = _lines("""
Silva
Berg
Novak
Tanaka
Haddad
Moreau
Kowalski
Reyes
Lindgren
Osei
Petrov
Costa
Nguyen
Schmidt
Farah
Jensen
Duarte
Ahmed
Murphy
Rossi
Kim
Dubois
Mensah
Horvat
Lopez
Walsh
Chen
Ibrahim
""")


# ---------------------------------------------------------------------------------------------
# Conversations for multi-turn rows: "[kind]", then U:/A: turns in order, then F: lines, each
# one possible last user turn. Lines without a tag continue the turn above (code, poems).


@dataclass(frozen=True)
class Conversation:
    kind: str  # prose, code, creative, math: picks the generic follow-ups that fit
    turns: tuple[dict, ...]
    followups: tuple[str, ...]


def _conversations(block: str) -> list[Conversation]:
    out = []
    for entry in block.strip().split("\n\n"):
        lines = entry.strip().splitlines()
        kind = lines[0].strip("[]")
        turns: list[dict] = []
        followups: list[str] = []
        for line in lines[1:]:
            tag, _, rest = line.partition(": ")
            if tag in ("U", "A"):
                turns.append({"role": "user" if tag == "U" else "assistant", "content": rest})
            elif tag == "F":
                followups.append(rest)
            else:
                turns[-1]["content"] += "\n" + line.rstrip()
        out.append(Conversation(kind, tuple(turns), tuple(followups)))
    return out


CONVERSATIONS = _conversations("""
[prose]
U: What is a good houseplant for a dark room?
A: A snake plant is a good choice. It grows slowly, needs water only every two or three weeks and copes well with low light.
F: How often should I repot it?
F: Is it safe to keep around cats?
F: What other plants are similar?

[prose]
U: Can you suggest a name for my new bakery?
A: How about "Rise and Shine Bakery"? It sounds cheerful and hints at fresh bread in the morning.
F: Give me five more names in a similar style.
F: Can you suggest a short slogan to go with that name?

[prose]
U: I have chicken, rice and spinach. What can I cook tonight?
A: You could make a one-pan chicken and spinach rice: brown the chicken, cook the rice in stock in the same pan, and stir in the spinach at the end.
F: How long will that take?
F: Can I make it spicy?
F: What could I use instead of spinach?

[prose]
U: Is weather the same thing as climate?
A: Not quite. Weather is what the atmosphere is doing on a particular day, such as rain or sun. Climate is the average pattern of weather in a place over many years.
F: Can you give an example of each?
F: How do scientists measure climate?

[code]
U: Write a Python function that converts Celsius to Fahrenheit.
A: def celsius_to_fahrenheit(c):
    return c * 9 / 5 + 32
F: Now write the opposite function.
F: Add a docstring and type hints.
F: How would I use it to convert a list of temperatures?

[creative]
U: Give me a short motivational quote for a Monday.
A: "Small steps every day add up to big changes."
F: Give me another one that is a bit funnier.
F: Make it shorter so it fits on a sticky note.

[prose]
U: How many hours of sleep does a teenager need?
A: Most teenagers need about eight to ten hours of sleep each night.
F: What happens if they get less than that?
F: Give me three tips to help a teenager fall asleep earlier.

[prose]
U: What should I pack for a weekend camping trip?
A: Bring a tent, a sleeping bag and mat, a torch, warm layers, a rain jacket, a small stove, simple food, water and a first-aid kit.
F: What food is easy to cook on a small stove?
F: Which of those items could I leave out if I am hiking light?

[prose]
U: Translate "Good morning, how are you?" into Spanish.
A: "Buenos días, ¿cómo estás?"
F: How would I say it more formally?
F: Now translate it into Italian.

[prose]
U: Suggest a weekend activity for a rainy day.
A: You could visit a museum, try a new recipe, or build a blanket fort and have a film marathon at home.
F: Which of those is best for two small children?
F: Give me something more active.

[creative]
U: Write a haiku about coffee.
A: Dark cup in my hands
steam curls into morning air
the day opens slow
F: Now write one about tea.
F: Can you write a longer poem on the same theme?

[prose]
U: What does a project manager do?
A: A project manager plans the work, sets deadlines, coordinates the team, manages the budget and keeps everyone informed about progress and problems.
F: What skills do you need for that job?
F: How is that different from a product manager?

[prose]
U: Recommend a book for someone who likes detective stories.
A: You might enjoy a classic such as "The Hound of the Baskervilles" by Arthur Conan Doyle. It is short, atmospheric and full of clever deductions.
F: Something more modern, please.
F: Is there a good detective series for teenagers?

[prose]
U: How do I boil an egg so the yolk stays soft?
A: Lower the egg into boiling water, cook it for six minutes, then put it straight into cold water for one minute before peeling.
F: And for a hard-boiled egg?
F: Why does the cold water help?

[math]
U: What is a prime number?
A: A prime number is a whole number greater than 1 that can only be divided evenly by 1 and itself, such as 2, 3, 5, 7 and 11.
F: Is 1 a prime number?
F: List the prime numbers between 30 and 60.
F: Why are prime numbers important in cryptography?

[prose]
U: My laptop is running very slowly. What can I do?
A: Start by restarting it, closing programs you are not using, and checking how much free disk space you have. Also remove apps that start automatically when you log in.
F: How do I check which programs use the most memory?
F: Would adding more RAM help?

[creative]
U: Write a short birthday message for my sister.
A: Happy birthday to the best sister in the world! Thank you for always making me laugh. I hope your day is as wonderful as you are.
F: Make it funnier.
F: Now make it shorter, for a text message.
F: Add a line about our trip to the lake last summer.

[prose]
U: What are the main causes of air pollution in cities?
A: The biggest sources are road traffic, heating and power stations that burn fossil fuels, industry, and dust from construction.
F: What can a city do to reduce it?
F: How does air pollution affect health?

[prose]
U: Explain what a budget is in one sentence.
A: A budget is a plan for how much money you expect to earn and how you will spend or save it over a period of time.
F: How do I make a simple monthly budget?
F: Explain it to a ten-year-old.

[prose]
U: Give me a word that means "very happy".
A: "Elated" means very happy and excited.
F: Give me four more synonyms.
F: Use "elated" in a sentence.
F: What is the opposite?

[prose]
U: What is the tallest animal in the world?
A: The giraffe is the tallest animal; adult males can be more than five meters tall.
F: Why do giraffes have such long necks?
F: What is the heaviest animal?

[prose]
U: I want to learn the guitar. Should I start with an acoustic or an electric one?
A: Either works, but many beginners start with an acoustic guitar because it needs no amplifier and builds finger strength. Electric guitars have lighter strings and are easier to press.
F: How much should I spend on my first guitar?
F: What songs are good for beginners?

[code]
U: Write a SQL query that counts the number of orders per customer.
A: SELECT customer_id, COUNT(*) AS order_count
FROM orders
GROUP BY customer_id;
F: Now show only customers with more than five orders.
F: Sort the result from the most orders to the fewest.

[prose]
U: How do I say thank you in Japanese?
A: You can say "arigatou", or "arigatou gozaimasu" to be more polite.
F: How do I say "you're welcome"?
F: And how do I say "excuse me"?

[prose]
U: What is the best way to memorize vocabulary in a new language?
A: Use spaced repetition: review new words on flashcards after one day, then three days, then a week. Saying the words aloud and using them in sentences also helps them stick.
F: Can you recommend a daily routine?
F: How many new words should I learn per day?

[creative]
U: Write a short post announcing that our cafe now serves vegan cakes.
A: Big news! Our cafe now serves vegan cakes, from chocolate fudge to lemon drizzle. Come and try a slice this weekend!
F: Make it sound more professional.
F: Write two more versions.

[prose]
U: Is it better to exercise in the morning or in the evening?
A: Both are fine, and the best time is the one you can stick to. Morning exercise can boost energy for the day, while evening workouts may feel easier because your body is already warmed up.
F: What is a good 20-minute morning routine?
F: Is it bad to exercise right before bed?

[code]
U: Write a JavaScript function that capitalizes the first letter of a string.
A: function capitalize(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
F: What happens if the string is empty?
F: Now make it capitalize every word.

[prose]
U: Help me name my cat. She is black with white paws.
A: How about "Socks"? It suits a cat whose white paws look like little socks.
F: Give me some less common ideas.
F: What about names inspired by the night sky?

[prose]
U: How is a virus different from a bacterium?
A: Bacteria are tiny living cells that can survive on their own, and many are harmless or even helpful. Viruses are much smaller and can only reproduce inside the cells of another living thing.
F: Do antibiotics work on viruses?
F: Give me two examples of illnesses caused by each.

[prose]
U: Plan a simple three-day trip to Lisbon.
A: Day 1: the old Alfama district and the castle. Day 2: Belém, its tower and monastery, and the famous custard tarts. Day 3: a day trip by train to Sintra.
F: What should I eat while I am there?
F: How can I get around the city cheaply?
F: Change the plan for a family with young kids.

[prose]
U: How can I make my presentation less boring?
A: Tell a short story at the start, use fewer words and more pictures on your slides, ask the audience a question, and finish with one clear message.
F: How many slides should a ten-minute talk have?
F: How do I stop feeling nervous before speaking?

[prose]
U: What is a haiku?
A: A haiku is a short Japanese poem of three lines, traditionally with five, seven and five syllables, often about nature or a single moment.
F: Write one about the city.
F: What other short poem forms are there?

[prose]
U: What does HTTP stand for?
A: HTTP stands for Hypertext Transfer Protocol. It is the set of rules web browsers and servers use to exchange web pages and other data.
F: What is the difference between HTTP and HTTPS?
F: What does a 404 error mean?

[prose]
U: I need a quick healthy snack for work.
A: Try a handful of almonds with an apple, carrot sticks with hummus, or a yogurt with some oats on top.
F: Which of those has the most protein?
F: Something I can keep in my desk drawer without a fridge?

[creative]
U: Can you write a limerick about a lazy dog?
A: A lazy old hound named McGraw
would nap with his chin on one paw.
He'd yawn at the mail,
barely thump with his tail,
and wake only for snacks that he saw.
F: Now write one about a busy squirrel.
F: What makes a limerick a limerick?

[prose]
U: What year did World War II end?
A: World War II ended in 1945: in Europe in May and in the Pacific in September.
F: Which countries were the main Allies?
F: How long did the war last in total?

[math]
U: How do I work out a 15 percent tip?
A: Multiply the bill by 0.15. For a 40-dollar bill, that is 40 × 0.15 = 6 dollars.
F: What would it be on a bill of 64 dollars?
F: Is there a quick way to do it in my head?

[creative]
U: Tell me the plot of Cinderella in two sentences.
A: A kind young woman, mistreated by her stepmother and stepsisters, goes to a royal ball with the help of her fairy godmother and wins the prince's heart. She flees at midnight leaving a glass slipper, and the prince searches the kingdom until he finds her.
F: Now tell it from the stepmother's point of view.
F: What is the moral of the story?

[prose]
U: I am starting a vegetable garden. What is easy to grow?
A: Lettuce, radishes, beans, courgettes and cherry tomatoes are all easy for beginners, and herbs such as mint and basil grow well in pots.
F: Which of those can I grow on a balcony?
F: When should I plant them?

[prose]
U: I want to bake bread for the first time.
A: A simple no-knead loaf is a great start: flour, water, salt and a little yeast, mixed and left to rise overnight.
U: How much of each do I need?
A: For one loaf: 500 grams of flour, 375 milliliters of water, 10 grams of salt and a quarter teaspoon of dried yeast.
F: What temperature should the oven be?
F: Can I use whole wheat flour instead?

[code]
U: Write a Python list of five fruits.
A: fruits = ["apple", "banana", "cherry", "mango", "pear"]
U: Now sort it in reverse alphabetical order.
A: fruits.sort(reverse=True)
print(fruits)  # ['pear', 'mango', 'cherry', 'banana', 'apple']
F: How do I add another fruit to the list?
F: How can I print each fruit on its own line?

[prose]
U: What's a good gift for my dad? He likes fishing.
A: A good fishing gift could be a tackle box, a new set of lures, a comfortable folding chair or a waterproof jacket.
U: My budget is about 30 dollars.
A: Within 30 dollars, a set of quality lures or a small tackle organizer would be a safe choice.
F: Which would you pick?
F: Can you suggest something that is not about fishing?

[prose]
U: Can you help me write a cover letter?
A: Of course. What job are you applying for, and what experience do you have?
U: It's for a receptionist job at a dentist's office. I worked at a hotel reception for two years.
A: Great, that experience is very relevant. Your letter should mention greeting guests, handling bookings and staying calm when things get busy.
F: Please write the first paragraph.
F: Write the whole letter in under 200 words.

[prose]
U: I want to run a 5K race in two months, but I can only run for ten minutes now.
A: That is a realistic goal. Run three times a week, mixing running and walking, and add a few minutes of running each week.
U: What should I do on the days I don't run?
A: Rest, or do gentle exercise such as walking, cycling or stretching. Rest days let your muscles recover.
F: What should I eat before a run?
F: Write me a plan for the first two weeks.

[math]
U: What is 15 times 12?
A: 15 times 12 is 180.
U: And divided by 4?
A: 180 divided by 4 is 45.
F: Now add 27 to that.
F: Is the result a prime number?

[prose]
U: What is a good name for a hiking club?
A: "Trail Blazers" is a classic: it is easy to remember and suggests adventure.
U: We mostly hike in the mountains.
A: Then you could try "Peak Seekers" or "High Ridge Walkers".
F: Give me a few that are a bit funny.
F: Write a short motto for "Peak Seekers".

[prose]
U: Tell me something interesting about octopuses.
A: Octopuses have three hearts and blue blood.
U: Why is their blood blue?
A: It carries oxygen with a copper-based molecule called hemocyanin instead of the iron-based hemoglobin in our blood. Hemocyanin works well in cold water with little oxygen.
F: How smart are they?
F: How long do octopuses live?

[creative]
U: Write a short poem about autumn.
A: Golden leaves drift down,
crisp air whispers through the trees,
the year takes a breath.
U: That's a haiku. Can you make it rhyme?
A: The leaves turn gold and drift away,
the evenings shorten day by day,
the wind sings softly through the trees,
and autumn settles in with ease.
F: Add a second verse about winter coming.
F: Now write the same poem for a child.
""")

GENERIC_FOLLOWUPS = {
    "prose": _lines("""
Can you make that shorter?
Explain that in simpler words, please.
Could you put that as a bulleted list?
Thanks. Can you give me an example?
Translate your last answer into Spanish.
Can you say a bit more about that?
Summarize your answer in one sentence.
Rewrite your answer in a more formal tone.
Why is that?
Are you sure? Please double-check.
"""),
    "code": _lines("""
Can you explain how that works, line by line?
Add comments to the code.
How would I test this?
Can you make it handle bad input?
Is there a shorter way to write it?
What is the time complexity?
"""),
    "creative": _lines("""
Make it longer.
Now make it funnier.
Give it a title.
Rewrite it for a five-year-old.
Make it more dramatic.
Can you write another version?
"""),
    "math": _lines("""
Can you check that answer another way?
Explain each step, please.
Turn that into a word problem for a child.
What if the numbers were twice as big?
"""),
}

PASSAGE_FOLLOWUPS = _lines("""
Great. Now summarize it in one sentence.
Can you turn it into a short bulleted list?
Which numbers are mentioned in it?
Rewrite it so a child could understand it.
Give it a short title.
Write three questions someone could answer after reading it.
What is the most important detail in it?
Copy the last sentence exactly.
Rewrite it in a more formal tone.
Now make it about half as long.
""")


@dataclass(frozen=True)
class Snippet:
    language: str  # python, javascript
    does: str  # what it does ("adds up the even numbers in a list"), or for a buggy one, its bug
    code: str


def _snippets(block: str) -> list[Snippet]:
    out = []
    for entry in block.strip().split("@@ ")[1:]:
        head, _, code = entry.partition("\n")
        language, does = (s.strip() for s in head.split("|"))
        out.append(Snippet(language, does, code.strip("\n")))
    return out


SNIPPETS = _snippets('''
@@ python | adds up the even numbers in a list
def total_even(numbers):
    total = 0
    for n in numbers:
        if n % 2 == 0:
            total += n
    return total

@@ python | counts how many times each word appears in a text
def word_counts(text):
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts

@@ python | finds the longest string in a list
def longest(words):
    best = ""
    for w in words:
        if len(w) > len(best):
            best = w
    return best

@@ python | keeps only the unique items of a list, in their original order
def unique(items):
    seen = set()
    result = []
    for item in items:
        if item not in seen:
            seen.add(item)
            result.append(item)
    return result

@@ python | turns a number of seconds into a minutes:seconds string
def format_duration(seconds):
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}:{secs:02d}"

@@ python | reads a text file and returns its non-empty lines
def read_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]

@@ python | computes the average of the values in a dictionary of scores
def average_score(scores):
    if not scores:
        return 0.0
    return sum(scores.values()) / len(scores)

@@ python | defines a bank account class with deposit and withdraw methods
class Account:
    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount):
        self.balance += amount

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount

@@ python | builds a list of the squares of the odd numbers below ten
squares = [n * n for n in range(10) if n % 2 == 1]
print(squares)

@@ python | tells whether a year is a leap year
def is_leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)

@@ python | groups a list of words by their first letter
def group_by_letter(words):
    groups = {}
    for word in words:
        groups.setdefault(word[0].lower(), []).append(word)
    return groups

@@ python | keeps the n largest numbers of a list, biggest first
def top_n(numbers, n):
    return sorted(numbers, reverse=True)[:n]

@@ javascript | adds up the prices of the items in a shopping cart
function cartTotal(items) {
  return items.reduce((sum, item) => sum + item.price * item.quantity, 0);
}

@@ javascript | turns a sentence into title case
function titleCase(sentence) {
  return sentence
    .split(" ")
    .map(w => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase())
    .join(" ");
}

@@ javascript | waits a number of milliseconds before resolving a promise
function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

@@ javascript | counts how many vowels a string contains
function countVowels(text) {
  const matches = text.match(/[aeiou]/gi);
  return matches ? matches.length : 0;
}
''')

BUGGY_SNIPPETS = _snippets('''
@@ python | starts from zero, so it fails when every number is negative
def largest(numbers):
    best = 0
    for n in numbers:
        if n > best:
            best = n
    return best

@@ python | uses integer division, so the average is rounded down
def average(values):
    return sum(values) // len(values)

@@ python | never decreases n, so the loop never ends
def countdown(n):
    while n > 0:
        print(n)
    print("Liftoff!")

@@ python | uses the step 1 instead of -1, so nothing is reversed
def reverse(text):
    return text[::1]

@@ python | shares one default list between calls
def add_item(item, items=[]):
    items.append(item)
    return items

@@ python | has no base case for 0, so factorial(0) recurses forever
def factorial(n):
    if n == 1:
        return 1
    return n * factorial(n - 1)

@@ python | indexes one past the end of the list
def last(items):
    return items[len(items)]

@@ python | uses = instead of == in the comparison
def contains(words, target):
    for w in words:
        if w = target:
            return True
    return False

@@ javascript | stops one element early, so the last value is skipped
function sum(arr) {
  let total = 0;
  for (let i = 0; i < arr.length - 1; i++) {
    total += arr[i];
  }
  return total;
}

@@ python | throws away the cleaned names instead of saving them
def clean_names(names):
    for name in names:
        name.strip().lower()
    return names

@@ python | counts characters instead of lines and never closes the file
def count_lines(path):
    f = open(path)
    return len(f.read())

@@ javascript | compares with == against a string, so "0" and 0 are treated alike
function isZero(value) {
  return value == "0";
}
''')


# ---------------------------------------------------------------------------------------------
# Text transforms for proofreading tasks.

MISSPELLINGS = {
    "receive": "recieve", "their": "thier", "because": "becuase", "which": "wich", "until": "untill",
    "separate": "seperate", "tomorrow": "tommorow", "beginning": "begining", "friend": "freind",
    "believe": "beleive", "different": "diffrent", "restaurant": "restaurent", "necessary": "neccessary",
    "address": "adress", "really": "realy", "business": "buisness", "government": "goverment",
    "every": "evry", "before": "befor", "usually": "usualy", "minutes": "minuts", "people": "poeple",
    "about": "abuot", "would": "woudl", "weather": "wether", "there": "ther", "through": "thru",
    "again": "agian", "where": "were", "water": "watter", "across": "accross", "finally": "finaly",
}


def _typo(word: str, r: random.Random) -> str:
    low = word.lower()
    if low in MISSPELLINGS and r.random() < 0.7:
        new = MISSPELLINGS[low]
        return new.capitalize() if word[0].isupper() else new
    j = r.randrange(1, len(word) - 2)
    kind = r.randrange(3)
    if kind == 0 and word[j] != word[j + 1]:  # swap two letters
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if kind == 1:  # double a letter
        return word[: j + 1] + word[j:]
    return word[:j] + word[j + 1 :]  # drop a letter


def add_typos(text: str, r: random.Random, num_typos: int) -> str:
    """`text` with `num_typos` words (of 4+ letters) misspelled; spacing and punctuation kept."""
    tokens = re.split(r"(\W+)", text)
    candidates = [i for i, t in enumerate(tokens) if t.isalpha() and len(t) >= 4]
    for i in sorted(r.sample(candidates, min(num_typos, len(candidates)))):
        tokens[i] = _typo(tokens[i], r)
    return "".join(tokens)


def strip_case_and_punctuation(text: str) -> str:
    """Lower case, no sentence punctuation (decimal points and times such as 5:45 survive)."""
    text = re.sub(r"[.,!?;:\"]+(?=\s|$)|\"", "", text.lower())
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------
# Prompts whose numbers come from the RNG: math, sequences, tables of records, and the
# multi-turn rows built from the conversations and passages above.

SHOP_ITEMS = _pairs("""
notebook | notebooks | 2 | 6
sandwich | sandwiches | 4 | 8
cinema ticket | cinema tickets | 8 | 13
bag of rice | bags of rice | 3 | 6
T-shirt | T-shirts | 9 | 16
potted plant | potted plants | 6 | 11
bus ticket | bus tickets | 2 | 4
coffee | coffees | 3 | 5
loaf of bread | loaves of bread | 3 | 5
comic | comics | 5 | 8
deck of cards | decks of cards | 4 | 7
bottle of juice | bottles of juice | 2 | 4
candle | candles | 5 | 9
tennis ball | tennis balls | 2 | 4
jar of honey | jars of honey | 6 | 10
phone case | phone cases | 10 | 15
""")

SHARE_THINGS = _lines("""
stickers
marbles
cookies
grapes
trading cards
pencils
sweets
strawberries
coins
chestnuts
balloons
seashells
""")
VEHICLES = _pairs("""
train | 60 | 140
car | 50 | 110
cyclist | 12 | 30
runner | 8 | 15
ferry | 15 | 40
truck | 50 | 90
plane | 500 | 900
tractor | 15 | 30
""")
ROOMS = _lines("""
bedroom
kitchen
classroom
living room
office
garage
patio
hallway
workshop
studio
""")
RECIPE_AMOUNTS = _pairs("""
flour | grams
sugar | grams
milk | milliliters
butter | grams
rice | grams
pasta | grams
oats | grams
stock | milliliters
cheese | grams
lentils | grams
""")
EVENTS = _lines("""
film
football match
concert
meeting
train journey
cooking class
piano lesson
flight
exam
school play
""")
UNITS = _pairs("""
minutes | hours | 60
seconds | minutes | 60
centimeters | meters | 100
grams | kilograms | 1000
milliliters | liters | 1000
days | weeks | 7
millimeters | centimeters | 10
hours | days | 24
""")
SAVINGS_GOALS = _pairs("""
bicycle | 180 | 420
game console | 250 | 480
guitar | 120 | 360
concert ticket | 60 | 150
pair of trainers | 70 | 160
tablet | 200 | 450
tent | 90 | 260
""")
GROCERIES = _pairs("""
oat milk | 1.80
sourdough loaf | 4.20
free-range eggs (6) | 2.95
cheddar | 3.60
bananas (bunch) | 1.25
olive oil | 6.40
basmati rice | 2.10
tomatoes (pack) | 1.90
ground coffee | 5.75
dark chocolate | 2.30
washing-up liquid | 1.65
yogurt | 0.95
""")
APPOINTMENTS = _lines("""
dentist
team call
yoga class
lunch with Sami
parents' evening
car service
piano lesson
grocery run
haircut
project review
book club
vet appointment
swimming
dinner with Mum
""")
DAYS = _lines("""
Monday
Tuesday
Wednesday
Thursday
Friday
Saturday
Sunday
""")
MONTHS = _lines("""
January
February
March
April
May
June
July
August
September
October
November
December
""")


def _money(x: float) -> str:
    return f"{x:.2f}" if x != int(x) else str(int(x))


def _item(r: random.Random) -> tuple[str, str, int]:
    singular, plural, low, high = r.choice(SHOP_ITEMS)
    return singular, plural, r.randint(int(low), int(high))


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def math_shopping(r):
    (_, p1, c1), (_, p2, c2) = _item(r), _item(r)
    a, b, name = r.randint(2, 9), r.randint(2, 6), r.choice(FIRST_NAMES)
    if p1 == p2:
        return f"{name} buys {a} {p1} at {c1} dollars each. What is the total cost?"
    return r.choice([
        f"{name} buys {a} {p1} at {c1} dollars each and {b} {p2} at {c2} dollars each. How much is that altogether?",
        f"At a market stall, {p1} cost {c1} dollars each and {p2} cost {c2} dollars each. What do {a} {p1} and {b} {p2} cost in total?",
    ])


def math_change(r):
    _, plural, price = _item(r)
    n = r.randint(2, 6)
    note = next(v for v in (20, 50, 100, 200) if v > n * price)
    return f"{r.choice(FIRST_NAMES)} pays for {n} {plural} costing {price} dollars each with a {note}-dollar note. How much change should come back?"


def math_speed(r):
    vehicle, low, high = r.choice(VEHICLES)
    v, t = r.randint(int(low), int(high)), r.choice([1.5, 2, 2.5, 3, 4, 5])
    d = _money(v * t)
    if r.random() < 0.5:
        return f"A {vehicle} covers {d} kilometers in {_money(t)} hours at a steady pace. What is its average speed in kilometers per hour?"
    return f"A {vehicle} keeps up an average of {v} km/h. How many hours does a trip of {d} km take?"


def math_area(r):
    room, a, b = r.choice(ROOMS), r.randint(3, 14), r.randint(2, 9)
    if r.random() < 0.5:
        return f"A {room} measures {a} m by {b} m. Find its area and its perimeter."
    return f"Floor tiles cost {r.randint(12, 45)} dollars per square meter. How much will it cost to tile a {room} that measures {a} m by {b} m?"


def math_percent(r):
    price = r.randint(2, 30) * 10
    off = r.choice([10, 15, 20, 25, 30, 40, 50])
    return r.choice([
        f"A jacket costs {price} dollars and is on sale for {off}% off. What is the sale price?",
        f"What is {off}% of {price}?",
        f"A restaurant bill is {price} dollars. How much is a {r.choice([10, 15, 20])}% tip, and what is the total with the tip?",
        f"A town had {price * 100} residents. The population grew by {off // 5}% this year. How many people live there now?",
    ])


def math_average(r):
    scores = [r.randint(55, 100) for _ in range(r.randint(3, 6))]
    return f"{r.choice(FIRST_NAMES)}'s test scores are {', '.join(map(str, scores[:-1]))} and {scores[-1]}. What is the average score?"


def math_share(r):
    people, things = r.randint(3, 9), r.choice(SHARE_THINGS)
    total = people * r.randint(3, 15) + r.randint(0, people - 1)
    return f"{people} friends share {total} {things} as equally as they can. How many does each friend get, and how many are left over?"


def math_equation(r):
    x, a, b = r.randint(-9, 15), r.randint(2, 9), r.randint(1, 30)
    if r.random() < 0.5:
        return f"Solve for x: {a}x + {b} = {a * x + b}."
    c = r.randint(1, 9)
    return f"Solve {a}(x - {c}) = {a * (x - c)} and check your answer."


def math_recipe(r):
    ingredient, unit = r.choice(RECIPE_AMOUNTS)
    serves, wanted = r.choice([(2, 6), (4, 6), (4, 10), (3, 9), (6, 9), (8, 2), (4, 3)])
    amount = r.randint(2, 12) * 25
    return f"A recipe for {serves} people needs {amount} {unit} of {ingredient}. How much {ingredient} is needed for {wanted} people?"


def math_clock(r):
    h, m, dur = r.randint(7, 20), r.choice([0, 10, 15, 20, 30, 40, 45, 50]), r.randint(35, 200)
    return f"A {r.choice(EVENTS)} starts at {h}:{m:02d} and lasts {dur} minutes. At what time does it end?"


def math_ages(r):
    n1, n2 = r.sample(FIRST_NAMES, 2)
    young, gap, years = r.randint(4, 30), r.randint(2, 25), r.randint(2, 10)
    total = 2 * young + gap + 2 * years
    return f"{n1} is {gap} years older than {n2}. In {years} years, their ages will add up to {total}. How old is each of them now?"


def math_convert(r):
    small, big, factor = r.choice(UNITS)
    n = r.choice([1.5, 2, 2.5, 3, 4, 5, 6, 8, 12])
    if r.random() < 0.5:
        return f"How many {small} are there in {_money(n)} {big}?"
    return f"Convert {int(n * int(factor))} {small} into {big}."


def math_expression(r):
    a, b, c = r.randint(11, 99), r.randint(3, 29), r.randint(5, 99)
    return r.choice([
        f"Calculate {a} × {b} − {c}, showing your steps.",
        f"Work out ({a} + {b}) × {c % 9 + 2} step by step.",
        f"What is {a * 4} divided by {4 if a % 2 else 8}?",
        f"Compute {a}² − {b}².",
    ])


def math_savings(r):
    thing, low, high = r.choice(SAVINGS_GOALS)
    price, weekly = r.randint(int(low), int(high)), r.choice([5, 8, 10, 12, 15, 20, 25])
    return f"{r.choice(FIRST_NAMES)} saves {weekly} dollars a week to buy a {thing} that costs {price} dollars. How many weeks will it take?"


def math_fraction(r):
    num, den = r.choice([(1, 3), (2, 3), (3, 4), (2, 5), (3, 5), (5, 8), (3, 10), (7, 12)])
    total = den * r.randint(2, 20)
    return r.choice([
        f"What is {num}/{den} of {total}?",
        f"A class has {total} pupils and {num}/{den} of them walk to school. How many pupils do not walk?",
        f"Add {num}/{den} and 1/{r.choice([2, 6, 7, 9])}, and simplify the result.",
    ])


def math_divisors(r):
    n = r.randint(24, 240)
    a, b = r.randint(4, 30), r.randint(4, 30)
    return r.choice([
        f"List all the divisors of {n}.",
        f"Is {r.randrange(31, 400, 2)} a prime number? Show how you checked.",
        f"What is the least common multiple of {a} and {b}?",
        f"Find the greatest common divisor of {a * 6} and {b * 6}.",
    ])


def math_interest(r):
    p, rate, years = r.randint(5, 80) * 100, r.choice([2, 3, 4, 5, 6]), r.randint(2, 8)
    if r.random() < 0.5:
        return f"How much simple interest do {p} dollars earn in {years} years at {rate}% per year?"
    return f"If {p} dollars earn {rate}% interest per year, compounded yearly, how much is there after {years} years?"


def math_probability(r):
    red, blue, green = r.randint(1, 9), r.randint(1, 9), r.randint(1, 9)
    color = r.choice(["red", "blue", "green", "not blue"])
    return f"A bag holds {red} red, {blue} blue and {green} green marbles. If you pick one without looking, what is the probability that it is {color}?"


def sequence_count(r):
    start, step, n = r.randint(2, 60), r.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15, 25]), r.randint(8, 20)
    end = start + step * (n - 1)
    if r.random() < 0.5:
        return f"Count from {start} to {end} in steps of {step}."
    return f"Count down from {end} to {start} in steps of {step}, {r.choice(['one number per line', 'separated by commas'])}."


def sequence_table(r):
    n = r.choice([k for k in range(2, 26) if k != 3])
    return f"Write out the multiplication table for {n}, from {n} x 1 up to {n} x {r.choice([10, 12, 15])}."


def sequence_ordered(r):
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    i = r.randrange(0, 14)
    j = r.randrange(i + 6, 26)
    return r.choice([
        f"List the months of the year starting from {r.choice(MONTHS[1:])} and wrapping around to the start.",
        f"Name the days of the week beginning with {r.choice(DAYS[1:])}, one per line.",
        f"List the first {r.randint(8, 20)} prime numbers.",
        f"Write the first {r.randint(8, 20)} square numbers.",
        f"List the powers of 2 from 1 up to {2 ** r.randint(8, 16)}.",
        f"Write the odd numbers between {r.randint(10, 60)} and {r.randint(70, 130)}.",
        f"Write the letters from {letters[i]} to {letters[j]}, each followed by its position in the alphabet.",
        f"Write the Roman numerals from I to {['X', 'XV', 'XX', 'XXV', 'XXX'][r.randrange(5)]}.",
    ])


def sequence_next(r):
    kind = r.randrange(4)
    a, d = r.randint(1, 30), r.randint(2, 13)
    if kind == 0:
        seq = [a + d * k for k in range(5)]
    elif kind == 1:
        seq = [a * r.choice([2, 3]) ** k for k in range(5)] if a < 10 else [a - d * k for k in range(5)]
    elif kind == 2:
        seq = [(k + a % 5 + 1) ** 2 for k in range(5)]
    else:
        seq = [a, a + d]
        while len(seq) < 6:
            seq.append(seq[-1] + seq[-2])
    return f"What are the next three numbers in this sequence, and what is the rule? {', '.join(map(str, seq))}, ..."


def sequence_words(r):
    a = r.randint(1, 990)
    return f"Write the numbers from {a} to {a + r.randint(7, 14)} in words."


def _people(r: random.Random, k: int) -> list[tuple[str, int, str, str]]:
    firsts, lasts = r.sample(FIRST_NAMES, k), r.sample(LAST_NAMES, k)
    return [(f"{f} {l}", r.randint(19, 68), r.choice(GROUPS["cities"]), r.choice(GROUPS["jobs"])) for f, l in zip(firsts, lasts)]


def _people_text(r: random.Random, people) -> str:
    style = r.randrange(3)
    if style == 0:
        forms = [
            "{n} is {a} and works as {j} in {c}.",
            "{n}, {a}, is {j} based in {c}.",
            "{n} ({a}) lives in {c} and works as {j}.",
        ]
        return " ".join(r.choice(forms).format(n=n, a=a, c=c, j=_article(j)) for n, a, c, j in people)
    if style == 1:
        return "\n".join(f"- {n.lower()} / {a} / {c.lower()} / {j}" for n, a, c, j in people)
    return "; ".join(f"{n}, {a}, {c}, {j}" for n, a, c, j in people)


def reformat_records(r):
    people = _people(r, r.randint(3, 5))
    task = r.choice([
        "Make a Markdown table of these people, with one column each for name, age, city and job:",
        "Convert these details into a JSON list of objects with the keys name, age, city and job:",
        "Write this information as CSV with a header row (name,age,city,job):",
        "List these people sorted from youngest to oldest, one per line, as 'Name (age), job, city':",
    ])
    return f"{task}\n\n{_people_text(r, people)}"


def reformat_receipt(r):
    items = r.sample(GROCERIES, r.randint(3, 6))
    lines = "\n".join(f"{r.randint(1, 4)} x {name} @ {price}" for name, price in items)
    return f"Here is my shopping receipt:\n\n{lines}\n\nPut it in a table with a line total for each item and the overall total at the bottom."


def reformat_schedule(r):
    entries = []
    for what in r.sample(APPOINTMENTS, r.randint(4, 6)):
        day = r.choice(DAYS)[:3].lower() if r.random() < 0.5 else r.choice(DAYS)
        entries.append(f"{day} {r.randint(7, 20)}:{r.choice(['00', '15', '30', '45'])} {what}")
    sep = r.choice(["; ", ", ", "\n"])
    return f"Rewrite my notes for this week as a tidy schedule, sorted by day and time:\n\n{sep.join(entries)}"


def _group_items(r: random.Random, k: int) -> tuple[str, list[str]]:
    label = r.choice(list(GROUPS))
    return label, r.sample(GROUPS[label], k)


def repeat_continue_list(r):
    label, items = _group_items(r, r.randint(3, 5))
    n = r.randint(3, 6)
    if r.random() < 0.5:
        bullets = "\n".join(f"- {x}" for x in items)
        return f"Continue this list of {label} with {n} more, in the same format:\n\n{bullets}"
    return f"Here are some {label}: {', '.join(items)}. Add {n} more to the list, keeping the same style."


def repeat_sort(r):
    label, items = _group_items(r, r.randint(5, 8))
    return r.choice([
        f"Sort these {label} alphabetically: {', '.join(items)}.",
        f"Put these words in alphabetical order, one per line: {', '.join(items)}.",
        "Write this list in reverse order:\n\n" + "\n".join(f"{i}. {x}" for i, x in enumerate(items, 1)),
        f"Number these {label}, keeping their order: {', '.join(items)}.",
    ])


def classify_sort(r):
    (la, lb) = r.sample(list(GROUPS), 2)
    items = r.sample(GROUPS[la], r.randint(3, 4)) + r.sample(GROUPS[lb], r.randint(3, 4))
    r.shuffle(items)
    return f"Sort these into two groups, {la} and {lb}: {', '.join(items)}."


def classify_odd_one_out(r):
    la, lb = r.sample(list(GROUPS), 2)
    items = r.sample(GROUPS[la], 3) + [r.choice(GROUPS[lb])]
    r.shuffle(items)
    return f"Which one does not belong, and why? {', '.join(items)}"


def qa_statement(r):
    prose = [p for p in PASSAGES if p.kind not in ("dialogue", "casual")]
    passage = r.choice(prose)
    source = passage if r.random() < 0.5 else r.choice(prose)  # the claim is in the text, or is not
    claim = r.choice([s for s in re.split(r"(?<=[.!?])\s+", source.text) if len(s.split()) >= 5])
    return f"Does the text below say this: \"{claim}\"? Answer yes or no, and quote the sentence that shows it.\n\n{passage.text}"


def code_port(r):
    snippet = r.choice(SNIPPETS)
    language = r.choice([x for x in CODE_LANGUAGES if x.lower() != snippet.language])
    return f"Rewrite this {snippet.language.capitalize()} code in {language}:\n\n{snippet.code}"


def multi_turn_followup(r):
    conversation = r.choice(CONVERSATIONS)
    return [*map(dict, conversation.turns), {"role": "user", "content": r.choice(conversation.followups)}]


def multi_turn_generic(r):
    conversation = r.choice(CONVERSATIONS)
    return [*map(dict, conversation.turns), {"role": "user", "content": r.choice(GENERIC_FOLLOWUPS[conversation.kind])}]


def multi_turn_passage(r):
    passage = r.choice(PASSAGES)
    ask = r.choice(["Can you read this and tell me what it is about?", "What is this text about?", "Here is something I found. What is it?"])
    label = KIND_LABELS[passage.kind]
    answer = r.choice([f"It is {label} about {passage.about}.", f"This is {label} about {passage.about}.", f"Sure. It's {label} about {passage.about}."])
    return [
        {"role": "user", "content": f"{ask}\n\n{passage.text}"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": r.choice(PASSAGE_FOLLOWUPS)},
    ]


def multi_turn_code(r):
    snippet = r.choice(SNIPPETS)
    other = "Python" if snippet.language == "javascript" else "JavaScript"
    followups = [
        "Can you add comments to it?", f"Rewrite it in {other}.", "How could I make it shorter?",
        "Write two test cases for it.", "What happens if the input is empty?", "Can you give the function a better name?",
    ]
    return [
        {"role": "user", "content": f"What does this code do?\n\n{snippet.code}"},
        {"role": "assistant", "content": f"It {snippet.does}."},
        {"role": "user", "content": r.choice(followups)},
    ]


def multi_turn_math(r):
    _, plural, price = _item(r)
    n = r.randint(2, 9)
    if r.random() < 0.5:
        follow = r.choice([
            f"And if I buy {n + r.randint(1, 5)} instead?",
            f"What if they were {r.choice([10, 20, 25, 50])}% off?",
            f"How much change would I get from {next(v for v in (20, 50, 100, 200) if v > n * price)} dollars?",
            "Can you check that another way?",
        ])
        return [
            {"role": "user", "content": f"I'm buying {n} {plural} at {price} dollars each. How much is that?"},
            {"role": "assistant", "content": f"{n} × {price} = {n * price}, so the total is {n * price} dollars."},
            {"role": "user", "content": follow},
        ]
    v, t = r.choice([40, 50, 60, 75, 80, 90, 100, 120]), r.choice([2, 3, 4, 5])
    return [
        {"role": "user", "content": f"If I drive at {v} km/h, how long does a {v * t} km trip take?"},
        {"role": "assistant", "content": f"{v * t} ÷ {v} = {t}, so it takes {t} hours."},
        {"role": "user", "content": r.choice([
            f"And at {v + r.choice([10, 20, 30])} km/h?", "What if I stop for a 30-minute break on the way?", f"How far would I get in {t + 2} hours?",
        ])},
    ]


def _persona(user_text: str) -> Callable[[random.Random], list]:
    def make(r):
        return [{"role": "system", "content": r.choice(PERSONAS)}, {"role": "user", "content": _fill(user_text, r)}]

    return make


# ---------------------------------------------------------------------------------------------
# Slots and templates.

PROSE_KINDS = "news,product,email,recipe,instructions,history,science,story,notice,review,bio"
_SLOT = re.compile(r"\{(\w+)(?::([\w,]+))?(?:#(\d))?(?:\.(\d))?\}")
_ALTERNATIVES = re.compile(r"\[\[(.+?)\]\]", re.DOTALL)
_passage_pools: dict[str | None, list[Passage]] = {}


def _passage_pool(kinds: str | None) -> list[Passage]:
    if kinds not in _passage_pools:
        wanted = kinds.split(",") if kinds else list(KIND_LABELS)
        unknown = [k for k in wanted if k not in KIND_LABELS]
        if unknown:
            raise ValueError(f"unknown passage kinds {unknown}; known: {sorted(KIND_LABELS)}")
        _passage_pools[kinds] = [p for p in PASSAGES if p.kind in wanted]
    return _passage_pools[kinds]


def _pick(seq):
    return lambda r, arg: r.choice(seq)


SLOTS: dict[str, Callable[[random.Random, Union[str, None]], object]] = {
    "concept": _pick(CONCEPTS),
    "audience": _pick(AUDIENCES),
    "why": _pick(WHY),
    "process": _pick(PROCESSES),
    "invention": _pick(INVENTIONS),
    "list_subject": _pick(LIST_SUBJECTS),
    "trip": _pick(TRIPS),
    "meal_plan": _pick(MEAL_PLANS),
    "checklist_goal": _pick(CHECKLIST_GOALS),
    "howto": _pick(HOWTO_TASKS),
    "pair": _pick(COMPARE_PAIRS),
    "choice": _pick(CHOICES),
    "code_language": _pick(CODE_LANGUAGES),
    "code_task": _pick(CODE_TASKS),
    "code_concept": _pick(CODE_CONCEPTS),
    "sql": _pick(SQL_TASKS),
    "shell_task": _pick(SHELL_TASKS),
    "regex_target": _pick(REGEX_TARGETS),
    "error": _pick(ERRORS),
    "situation": _pick(SITUATIONS),
    "recommend": _pick(RECOMMENDATIONS),
    "good_thing": _pick(GOOD_THINGS),
    "fact_topic": _pick(FACT_TOPICS),
    "joke_topic": _pick(JOKE_TOPICS),
    "goal": _pick(GOALS),
    "mail": _pick(MAIL),
    "text_purpose": _pick(TEXT_PURPOSES),
    "complaint": _pick(COMPLAINTS),
    "character": _pick(CHARACTERS),
    "story_event": _pick(STORY_EVENTS),
    "setting": _pick(SETTINGS),
    "poem_subject": _pick(POEM_SUBJECTS),
    "poem_form": _pick(POEM_FORMS),
    "genre": _pick(GENRES),
    "dialogue_topic": _pick(DIALOGUE_TOPICS),
    "riddle": _pick(RIDDLE_ANSWERS),
    "language": _pick(LANGUAGES),
    "en_sentence": _pick(EN_SENTENCES),
    "en_quote": lambda r, arg: r.choice(EN_SENTENCES).removesuffix("."),
    "foreign": _pick(FOREIGN_SENTENCES),
    "word": _pick(WORDS),
    "phrase": _pick(PHRASES),
    "reading_q": _pick(READING_QUESTIONS),
    "review_line": _pick(REVIEW_LINES),
    "headline": _pick(HEADLINES),
    "statement": _pick(STATEMENTS),
    "name_target": _pick(NAME_TARGETS),
    "idea_target": _pick(IDEA_TARGETS),
    "gift_person": _pick(GIFT_PEOPLE),
    "ask_target": _pick(ASK_TARGETS),
    "name": _pick(FIRST_NAMES),
    "passage": lambda r, arg: r.choice(_passage_pool(arg)).text,
    "typo_passage": lambda r, arg: add_typos(r.choice(_passage_pool(arg or PROSE_KINDS)).text, r, r.randint(4, 7)),
    "lower_passage": lambda r, arg: strip_case_and_punctuation(r.choice(_passage_pool(arg or PROSE_KINDS)).text),
    "snippet": lambda r, arg: r.choice([s for s in SNIPPETS if arg in (None, s.language)]).code,
    "buggy": lambda r, arg: r.choice(BUGGY_SNIPPETS).code,
    "n": lambda r, arg: str(r.randint(3, 7)),
    "few": lambda r, arg: r.choice(["two", "three", "four"]),
}


def _fill(text: str, r: random.Random) -> str:
    """Resolve [[a|b]] phrasings, then {slot} fillers (see the module docstring)."""
    text = _ALTERNATIVES.sub(lambda m: r.choice(m.group(1).split("|")), text)
    drawn: dict[tuple, object] = {}

    def fill(m: re.Match) -> str:
        name, arg, draw, field = m.groups()
        if name not in SLOTS:
            raise ValueError(f"unknown slot {{{name}}} in template {text!r}")
        key = (name, arg, draw)
        if key not in drawn:
            taken = [v for (n, a, _), v in drawn.items() if (n, a) == (name, arg)]
            value = SLOTS[name](r, arg)
            for _ in range(20):  # a second draw of the same slot differs from the first
                if value not in taken:
                    break
                value = SLOTS[name](r, arg)
            drawn[key] = value
        value = drawn[key]
        return value[int(field)] if field is not None else value

    return _SLOT.sub(fill, text)


Maker = Union[str, Callable[[random.Random], Union[str, list]]]


@dataclass(frozen=True)
class Template:
    name: str  # "<category>.<task>"
    category: str
    make: Maker  # a template string, or a function of the RNG -> prompt str | messages
    grounded: bool  # the answer reuses text given in the prompt


G = True  # marks a grounded template in the table below

# Relative share of each category (see `category_quotas`).
CATEGORY_WEIGHTS = {
    "explain": 8, "list": 4.5, "howto": 5, "compare": 3.5, "code": 9, "math": 7.5, "chat": 5.5,
    "email": 5, "creative": 7, "translation": 5, "summarize": 4, "extraction": 4, "rewrite": 4.5,
    "reformat": 3.5, "repeat": 3, "qa_context": 2, "classify": 3, "brainstorm": 3,
    "sequence": 2.5, "multi_turn": 7, "persona": 2,
}

_TABLE: dict[str, list[tuple]] = {
    "explain": [
        ("simple", "[[Explain|Can you explain|Please explain]] {concept} in simple terms."),
        ("audience", "Explain {concept} to {audience}."),
        ("short", "[[In two or three sentences|Briefly|In a short paragraph]], what is {concept}?"),
        ("example", "What is {concept}? [[Give one everyday example.|Include a real-life example.|Use an example to show it.]]"),
        ("why", "Why {why}?"),
        ("why_child", "[[My son|My daughter|My niece|A pupil]] asked me, \"Why {why}?\" How can I explain it simply?"),
        ("analogy", "Explain {concept} using an analogy."),
        ("misconception", "What is a common misconception about {concept}?"),
        ("process", "[[Describe|Explain]] how {process}, step by step."),
        ("history", "[[Give a brief history of|Tell me the story of|Summarize the history of]] {invention}."),
        ("impact", "How did {invention} change everyday life?"),
    ],
    "list": [
        ("n", "List {n} {list_subject}."),
        ("bullets", "Give me {n} {list_subject}, as a bulleted list."),
        ("explained", "Name {n} {list_subject}, with one sentence about each."),
        ("packing", "[[Make|Write]] a packing list for {trip}."),
        ("shopping", "[[Write a shopping list for|What do I need to buy for|Plan the groceries for]] {meal_plan}?"),
        ("checklist", "Make a checklist for {checklist_goal}."),
    ],
    "howto": [
        ("basic", "How do I {howto}?"),
        ("steps", "Give me step-by-step instructions to {howto}."),
        ("beginner", "I have never tried to {howto} before. Where should I start?"),
        ("mistakes", "What are common mistakes people make when they try to {howto}?"),
        ("needs", "What do I need to {howto}, and how long does it take?"),
        ("quick", "What's the quickest way to {howto}?"),
    ],
    "compare": [
        ("difference", "What is the difference between {pair.0} and {pair.1}?"),
        ("pros_cons", "Compare {pair.0} and {pair.1}. What are the pros and cons of each?"),
        ("choose", "Which is better for {choice.2}: {choice.0} or {choice.1}?"),
        ("table", "Make a short table comparing {pair.0} and {pair.1}."),
        ("alike", "How are {pair.0} and {pair.1} alike, and how do they differ?"),
    ],
    "code": [
        ("function", "Write a {code_language} function that {code_task}."),
        ("in_language", "In {code_language}, how would I write a function that {code_task}?"),
        ("with_examples", "Write a function that {code_task}. Use {code_language} and show two example calls."),
        ("explain_snippet", "[[Explain what this code does:|What does this code do?|Can you walk me through this code?]]\n\n{snippet}", G),
        ("comment_snippet", "[[Add helpful comments to this code:|Add a docstring and comments to this code:]]\n\n{snippet}", G),
        ("fix_bug", "[[This code has a bug. Find it and fix it:|Something is wrong with this code. What is the bug?|Why doesn't this code work as intended?]]\n\n{buggy}", G),
        ("port", code_port, G),
        ("concept", "Explain {code_concept} with a short example in {code_language}."),
        ("sql", "I have a table {sql.0} with the columns {sql.1}. [[Write an SQL query that {sql.2}.|Show me a query that {sql.2}.|How do I write a query that {sql.2}?]]"),
        ("shell", "[[What is the command to|How can I]] {shell_task} [[on Linux|from the terminal|in bash]]?"),
        ("regex", "Write a regular expression that matches {regex_target}[[, and explain each part.|. Show it in {code_language}.|, with two strings it should match and one it should not.]]"),
        ("error", "[[I got this error: {error}\nWhat does it mean and how do I fix it?|Why would my program fail with \"{error}\"?]]"),
    ],
    "math": [
        ("shopping", math_shopping), ("change", math_change), ("speed", math_speed), ("area", math_area),
        ("percent", math_percent), ("average", math_average), ("share", math_share),
        ("equation", math_equation), ("recipe", math_recipe), ("clock", math_clock), ("ages", math_ages),
        ("convert", math_convert), ("expression", math_expression), ("savings", math_savings),
        ("fraction", math_fraction), ("divisors", math_divisors), ("interest", math_interest),
        ("probability", math_probability),
    ],
    "chat": [
        ("advice", "{situation} [[Any advice?|What should I do?|What would you suggest?|Can you give me a few practical tips?]]"),
        ("recommend", "Can you recommend {recommend}?"),
        ("opinion", "[[What makes|What are the signs of|How would you describe]] {good_thing}?"),
        ("fact", "Tell me [[a fun fact|something surprising|an interesting fact]] about {fact_topic}."),
        ("motivation", "[[I need some motivation to|Give me a pep talk. I have to|Help me find the energy to]] {goal}."),
        ("joke", "Tell me a [[clean|short|silly]] joke about {joke_topic}."),
    ],
    "email": [
        ("write", "Write an email to {mail.0} to {mail.1}[[.|. Sign it {name}.|. Keep it under 100 words.]]"),
        ("polite", "Write a short, polite email to {mail.0} to {mail.1}[[.|. My name is {name}.|, in a warm tone.]]"),
        ("draft", "[[Draft a professional email to {mail.0}.|Help me write an email to {mail.0}.]] I need to {mail.1}."),
        ("subjects", "Suggest three subject lines for an email to {mail.0} to {mail.1}."),
        ("text", "Write a [[short|friendly|quick]] text message to {text_purpose}."),
        ("complaint", "[[Write a formal complaint letter to|Write a firm but polite email to|Help me complain to]] {complaint.0} about {complaint.1}."),
        ("reply", "[[Write a reply to this email:|Write a short, friendly reply to this email:|How should I answer this email? Write the reply for me.]]\n\n{passage:email}", G),
    ],
    "creative": [
        ("story", "Write a short story about {character} who {story_event}."),
        ("story_setting", "Tell a story set in {setting}, in which {character} {story_event}."),
        ("poem", "Write a poem about {poem_subject}."),
        ("form", "Write a {poem_form} about {poem_subject}."),
        ("describe", "Describe {setting} in a few vivid sentences."),
        ("dialogue", "Write a short dialogue between {character} and {character#2} about {dialogue_topic}."),
        ("opening", "Write the opening paragraph of a {genre} story set in {setting}."),
        ("letter", "Write a letter from {character} to {character#2}."),
        ("continue", "Continue this story [[for one more paragraph|with a surprising ending|in the same style]]:\n\n{passage:story}", G),
        ("song", "Write the chorus of a song about {poem_subject}."),
        ("riddle", "Write a riddle whose answer is {riddle}."),
    ],
    "translation": [
        ("to", "Translate into {language}: {en_sentence}"),
        ("say", "How do I say \"{en_quote}\" in {language}?"),
        ("from", "Translate into English: {foreign}"),
        ("meaning", "What does this sentence mean in English? {foreign}"),
        ("paragraph", "Translate this paragraph into {language}:\n\n{passage:news,product,notice,recipe,story}", G),
        ("word", "What is the {language} word for \"{word}\"? Use it in a short sentence."),
        ("phrase", "[[What does the {phrase.0} expression \"{phrase.1}\" mean, and when do people use it?|Is there an English equivalent of the {phrase.0} phrase \"{phrase.1}\"?]]"),
    ],
    "summarize": [
        ("one_sentence", "[[Summarize this in one sentence:|Give me a one-sentence summary of this text:|What is the gist of this, in one sentence?]]\n\n{passage}", G),
        ("bullets", "[[Boil this text down to|Condense this into|Reduce this text to]] {few} bullet points:\n\n{passage}", G),
        ("tldr", "[[TL;DR please:|Write a TL;DR for this:|Can you shorten this to a couple of lines?]]\n\n{passage}", G),
        ("headline", "Write a [[catchy|short|clear]] headline for this news item:\n\n{passage:news}", G),
        ("audience", "Explain what this text says to {audience}:\n\n{passage:science,history,news,instructions}", G),
        ("title", "Give this text a title of at most six words:\n\n{passage}", G),
        ("request", "What does the sender of this [[email|message]] want? Answer in one or two sentences.\n\n{passage:email,casual}", G),
    ],
    "extraction": [
        ("numbers", "List every number in this text and say what it refers to:\n\n{passage:news,product,history,notice,email}", G),
        ("entities", "Which people, places and organizations are named in this text?\n\n{passage:news,history,bio,email}", G),
        ("json", "Extract the key facts from this text as a JSON object:\n\n{passage:product,notice,news,email}", G),
        ("ingredients", "[[List the ingredients needed for this recipe, with amounts.|What ingredients do I need for this? Give me a shopping list.|Pull out the ingredients and quantities from this recipe.]]\n\n{passage:recipe}", G),
        ("product", "[[From this product description, pull out the name, the price and the main features:|What are the price and the three most useful features of the product described here?|Write the specifications of this product as a list of key: value lines:]]\n\n{passage:product}", G),
        ("email_fields", "[[From this email, extract the sender, the main request and any dates or deadlines:|Who wrote this email, to whom, and what do they ask for?|Turn this email into a short to-do list for the person who received it:]]\n\n{passage:email}", G),
        ("keywords", "Pick out [[five|six|the most important]] keywords from this text:\n\n{passage}", G),
        ("speakers", "[[Who is speaking in this conversation, and what does each person want?|List the speakers in this dialogue and sum up what each one says.|What is decided in this conversation, and who decides it?]]\n\n{passage:dialogue}", G),
        ("times", "Find each date, weekday and clock time in this text and list them in order:\n\n{passage:notice,email,news}", G),
    ],
    "rewrite": [
        ("formal", "[[Rewrite this message in a formal, professional tone:|Turn this text message into a polite, formal email:|Clean up this message so it reads well: fix the spelling, capitals and punctuation.|Make this message sound professional but still friendly:]]\n\n{passage:casual}", G),
        ("casual", "Rewrite this in a friendly, casual tone:\n\n{passage:email,notice}", G),
        ("simple", "Rewrite this paragraph with simpler words so a child can understand it:\n\n{passage:science,history,news}", G),
        ("shorter", "Make this text about half as long without losing the main facts:\n\n{passage}", G),
        ("paraphrase", "Paraphrase this so it says the same thing in different words:\n\n{passage}", G),
        ("past", "Change this text to the past tense and keep everything else the same:\n\n{passage:science,product}", G),
        ("retell", "[[Retell this story in the present tense, changing nothing else:|Rewrite this story in the first person, as the main character:|Retell this story from the point of view of another character in it:]]\n\n{passage:story}", G),
        ("typos", "[[Fix the typos in this text:|Correct the spelling mistakes in this paragraph:|Please proofread this and fix the spelling:]]\n\n{typo_passage}", G),
        ("punctuation", "Add the missing capital letters and punctuation to this text:\n\n{lower_passage}", G),
        ("positive", "[[Rewrite this review so it sounds more positive, but keep the facts:|Make this review sound more upbeat without changing what happened:|Rewrite this review in a more negative tone, keeping the facts:]]\n\n{passage:review}", G),
    ],
    "reformat": [
        ("bullets", "Turn this paragraph into a bulleted list, one fact per bullet:\n\n{passage:news,product,history,science,bio,notice}", G),
        ("steps", "Rewrite these instructions as numbered steps:\n\n{passage:instructions,recipe}", G),
        ("table", "Put the information in this text into a Markdown table:\n\n{passage:product,notice,bio}", G),
        ("json", "Convert this text into a JSON object with sensible field names:\n\n{passage:product,notice,email}", G),
        ("prose", "[[Rewrite this conversation as a short paragraph of prose:|Retell this dialogue as a story paragraph, in the past tense:|Turn this conversation into a short narrative with no dialogue lines:]]\n\n{passage:dialogue}", G),
        ("records", reformat_records, G),
        ("receipt", reformat_receipt, G),
        ("schedule", reformat_schedule, G),
    ],
    "repeat": [
        ("copy", "[[Copy this text back to me exactly as it is:|Please repeat this paragraph without changing a word:|Echo the following text back exactly:]]\n\n{passage}", G),
        ("sentence", "Repeat this sentence [[two|three|four]] times, each time on a new line: {en_sentence}", G),
        ("lines", "Write each sentence of this paragraph on its own line:\n\n{passage:news,history,science,story,bio}", G),
        ("number", "Number the sentences of this text (1., 2., 3., ...) without changing them:\n\n{passage:news,history,science,story,bio,instructions}", G),
        ("quote", "Quote the first and the last sentence of this text exactly:\n\n{passage}", G),
        ("upper", "Rewrite this sentence in capital letters: {en_sentence}", G),
        ("continue_list", repeat_continue_list, G),
        ("sort", repeat_sort, G),
    ],
    "qa_context": [
        ("question", "Read the text below and answer: {reading_q}\n\n{passage}", G),
        ("quiz", "Write three quiz questions about this text, with their answers:\n\n{passage}", G),
        ("statement", qa_statement, G),
    ],
    "classify": [
        ("sentiment", "Is this review positive, negative or mixed? Explain briefly.\n\n\"{review_line}\""),
        ("topic", "Which section of a newspaper does this headline belong in: sports, politics, science, business, entertainment, health, technology or weather?\n\n\"{headline}\""),
        ("fact_opinion", "Is this a fact or an opinion? \"{statement}\""),
        ("sort", classify_sort),
        ("odd_one_out", classify_odd_one_out),
    ],
    "brainstorm": [
        ("names", "Suggest {n} names for {name_target}."),
        ("ideas", "Give me {n} ideas for {idea_target}."),
        ("gift", "What would be a good gift for {gift_person}[[?|, under 30 dollars?|, something handmade?]]"),
        ("questions", "What are some good questions to ask {ask_target}?"),
    ],
    "sequence": [
        ("count", sequence_count), ("table", sequence_table), ("ordered", sequence_ordered),
        ("next", sequence_next), ("words", sequence_words),
    ],
    "multi_turn": [
        ("followup", multi_turn_followup),
        ("generic", multi_turn_generic),
        ("passage", multi_turn_passage, G),
        ("code", multi_turn_code, G),
        ("math", multi_turn_math),
    ],
    "persona": [
        ("explain", _persona("[[Can you explain|What is|Tell me about]] {concept}?")),
        ("howto", _persona("How do I {howto}?")),
        ("chat", _persona("{situation} What do you think?")),
    ],
}

TEMPLATES = [
    Template(f"{category}.{entry[0]}", category, entry[1], len(entry) > 2 and entry[2])
    for category, entries in _TABLE.items()
    for entry in entries
]
TEMPLATES_BY_NAME = {t.name: t for t in TEMPLATES}


def num_fillers() -> int:
    """Distinct hand-written fillers of every kind (passages, conversations, code, words)."""
    pools = [PASSAGES, CONVERSATIONS, SNIPPETS, BUGGY_SNIPPETS, PERSONAS, FIRST_NAMES, LAST_NAMES]
    pools += [seq for name, seq in globals().items() if name.isupper() and isinstance(seq, list) and seq and isinstance(seq[0], (str, tuple))]
    pools += list(GROUPS.values()) + list(GENERIC_FOLLOWUPS.values())
    return len({(type(x).__name__, repr(x)) for pool in pools for x in pool})


# ---------------------------------------------------------------------------------------------
# Sampling.

MAX_MISSES = 30  # consecutive duplicate (or too long) draws before a template counts as used up


def _fits(content) -> bool:
    if isinstance(content, str):
        return len(content) <= MAX_PROMPT_CHARS
    users_fit = all(len(m["content"]) <= MAX_PROMPT_CHARS for m in content if m["role"] == "user")
    return users_fit and sum(len(m["content"]) for m in content) <= MAX_CONVERSATION_CHARS


def category_quotas(num_prompts: int) -> dict[str, int]:
    """`num_prompts` split by CATEGORY_WEIGHTS (largest remainders round up)."""
    total = sum(CATEGORY_WEIGHTS.values())
    exact = {c: num_prompts * w / total for c, w in CATEGORY_WEIGHTS.items()}
    quotas = {c: math.floor(x) for c, x in exact.items()}
    by_remainder = sorted(exact, key=lambda c: (quotas[c] - exact[c], c))
    for c in by_remainder[: num_prompts - sum(quotas.values())]:
        quotas[c] += 1
    return quotas


def build_corpus(num_prompts: int = 6000, seed: int = 0) -> list[dict]:
    """`num_prompts` distinct rows, deterministic in (num_prompts, seed), in sampled order.

    Each draw picks a category still under its quota (by CATEGORY_WEIGHTS), then one of its
    templates, and fills it; a duplicate or over-long prompt is a miss. A template leaves the
    pool after MAX_MISSES misses in a row (its fillers are used up) or once it wrote
    MAX_TEMPLATE_SHARE of the rows. If a category runs out of templates, the others fill its
    quota by weight.
    """
    if num_prompts < 1:
        raise ValueError(f"num_prompts must be >= 1, got {num_prompts}")
    r = random.Random(seed)
    cap = max(1, math.floor(MAX_TEMPLATE_SHARE * num_prompts))
    quotas = category_quotas(num_prompts)
    pool = {c: [t for t in TEMPLATES if t.category == c] for c in CATEGORY_WEIGHTS}
    counts: Counter = Counter()  # rows per template, and per category
    misses: Counter = Counter()
    seen: set[str] = set()
    picked: list[tuple[Template, object]] = []
    while len(picked) < num_prompts:
        open_ = [c for c in pool if pool[c] and counts[c] < quotas[c]] or [c for c in pool if pool[c]]
        if not open_:
            raise ValueError(f"the templates make only {len(picked)} distinct prompts, fewer than num_prompts={num_prompts}")
        category = r.choices(open_, weights=[CATEGORY_WEIGHTS[c] for c in open_])[0]
        t = r.choice(pool[category])
        content = _fill(t.make, r) if isinstance(t.make, str) else t.make(r)
        key = content if isinstance(content, str) else json.dumps(content, sort_keys=True)
        if key in seen or not _fits(content):
            misses[t.name] += 1
            if misses[t.name] >= MAX_MISSES:
                pool[category].remove(t)
            continue
        misses[t.name] = 0
        seen.add(key)
        counts[t.name] += 1
        counts[category] += 1
        picked.append((t, content))
        if counts[t.name] >= cap:
            pool[category].remove(t)
    rows, per_category = [], Counter()
    for t, content in picked:
        per_category[t.category] += 1
        row = {"id": f"corpus-{t.category}-{per_category[t.category]:04d}", "category": t.category, "template": t.name}
        row["prompt" if isinstance(content, str) else "messages"] = content
        rows.append(row)
    return rows


# Passage kinds a reply of the target can stand in for (explanations, how-tos, stories).
REPLY_KINDS = {"news", "instructions", "history", "science", "story", "bio"}
_SOURCE_SLOT = re.compile(r"\{(passage|typo_passage|lower_passage|en_sentence|en_quote)(?::([\w,]+))?\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def reply_templates() -> list[Template]:
    """The string templates with one source slot that any prose can fill: a passage of no
    kind outside REPLY_KINDS (with or without typos), or one English sentence."""
    picked = []
    for t in TEMPLATES:
        if not isinstance(t.make, str):
            continue
        slots = _SOURCE_SLOT.findall(t.make)
        if len(slots) != 1 or re.search(r"\{(snippet|buggy|\w+#)", t.make):
            continue
        kinds = slots[0][1]
        if kinds and not set(kinds.split(",")) & REPLY_KINDS:
            continue
        picked.append(t)
    return picked


def _sentences(text: str) -> list[str]:
    return [x for x in _SENTENCE_END.split(text) if 30 <= len(x) <= 160 and x[0].isupper() and x[-1] == "."]


def grounded_in(texts: list[str], num_prompts: int, seed: int = 0) -> list[dict]:
    """Rows whose source text comes from `texts`, each text used at most once.

    `specdec train-draft` feeds the target's own earlier replies here: every prompt then
    quotes prose the head has not seen before, so it has to learn to copy, summarize,
    rewrite and translate from its context rather than recall the few hundred PASSAGES and
    sentences above. The templates are `reply_templates()`, filled as `build_corpus` fills
    them; a sentence slot takes one sentence of the text. Deterministic in (texts, seed)."""
    r = random.Random(seed)
    templates = reply_templates()
    takes_passage = {t.name: "passage" in _SOURCE_SLOT.search(t.make).group(1) for t in templates}
    passage_templates = [t for t in templates if takes_passage[t.name]]
    order = list(range(len(texts)))
    r.shuffle(order)
    rows = []
    for i in order[:num_prompts]:
        text = texts[i]
        t = r.choice(templates)
        sentences = _sentences(text)
        if not takes_passage[t.name] and not sentences:
            t = r.choice(passage_templates)
        sentence = r.choice(sentences) if sentences else ""
        source = {"passage": text,
                  "typo_passage": add_typos(text, r, r.randint(4, 7)),
                  "lower_passage": strip_case_and_punctuation(text),
                  "en_sentence": sentence,
                  "en_quote": sentence.removesuffix(".")}
        marked = _SOURCE_SLOT.sub(lambda m: "\x00" + m.group(1) + "\x00", t.make)
        prompt = re.sub("\x00(\\w+)\x00", lambda m: source[m.group(1)], _fill(marked, r))
        rows.append({"id": f"reply-{len(rows):05d}", "category": t.category, "template": t.name, "prompt": prompt})
    return rows


def write_corpus(path: str | Path = DEFAULT_CORPUS, num_prompts: int = 6000, seed: int = 0) -> list[dict]:
    """Build the corpus, check it against the benchmark prompts, write it as JSONL; the rows."""
    rows = build_corpus(num_prompts, seed)
    problems = find_overlaps(rows, eval_user_texts())
    if problems:
        raise ValueError(f"{len(problems)} corpus rows overlap the benchmark prompts, e.g. {problems[:3]}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def corpus_stats(rows: list[dict]) -> dict:
    templates = Counter(row["template"] for row in rows)
    name, top = templates.most_common(1)[0]
    texts = {row.get("prompt") or json.dumps(row["messages"]) for row in rows}
    return {
        "num_rows": len(rows),
        "num_distinct": len(texts),
        "categories": dict(sorted(Counter(row["category"] for row in rows).items())),
        "num_templates_used": len(templates),
        "num_templates": len(TEMPLATES),
        "max_template": name,
        "max_template_share": round(top / len(rows), 4),
        "grounded_share": round(sum(n for t, n in templates.items() if TEMPLATES_BY_NAME[t].grounded) / len(rows), 4),
        "multi_turn_rows": sum("messages" in row for row in rows),
        "num_fillers": num_fillers(),
    }


# ---------------------------------------------------------------------------------------------
# No overlap with the benchmark prompts.


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def eval_user_texts(prompts_dir: str | Path = EVAL_PROMPTS_DIR) -> list[tuple[str, str]]:
    """(prompt id, text) for every user turn of every benchmark prompt in `prompts_dir`."""
    texts = []
    paths = sorted(Path(prompts_dir).glob("*.jsonl"))
    if not paths:
        raise FileNotFoundError(f"no benchmark prompt files (*.jsonl) in {prompts_dir}")
    for path in paths:
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            where = row.get("id", f"{path.name}:{line_no}")
            if "prompt" in row:
                texts.append((where, row["prompt"]))
            elif "messages" in row:
                texts.extend((where, m["content"]) for m in row["messages"] if m["role"] == "user")
            else:
                raise ValueError(f"{path}:{line_no}: expected a 'prompt' or 'messages' field")
    return texts


def _row_texts(row: dict) -> list[str]:
    return [row["prompt"]] if "prompt" in row else [m["content"] for m in row["messages"]]


def find_overlaps(rows: list[dict], eval_texts: list[tuple[str, str]], ngram: int = OVERLAP_NGRAM) -> list[str]:
    """One line per row that contains a benchmark prompt's text or shares an `ngram`-word run
    with one (words: lower-cased \\w+ runs, so case, spacing and punctuation are ignored)."""
    grams: dict[tuple[str, ...], str] = {}
    short: list[tuple[str, str]] = []  # prompts under `ngram` words: checked by containment
    for eval_id, text in eval_texts:
        words = _words(text)
        if 0 < len(words) < ngram:
            short.append((eval_id, f" {' '.join(words)} "))
        for i in range(len(words) - ngram + 1):
            grams.setdefault(tuple(words[i : i + ngram]), eval_id)
    problems = []
    for row in rows:
        for text in _row_texts(row):
            words = _words(text)
            joined = f" {' '.join(words)} "
            problems += [f"{row['id']}: contains eval prompt {eval_id} ({phrase.strip()!r})" for eval_id, phrase in short if phrase in joined]
            hit = next((g for g in zip(*(words[k:] for k in range(ngram))) if g in grams), None)
            if hit is not None:
                problems.append(f"{row['id']}: shares {' '.join(hit)!r} with eval prompt {grams[hit]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m specdec.train.corpus", description="write the synthetic training prompt corpus")
    p.add_argument("--out", default=str(DEFAULT_CORPUS), help="JSONL path (default: the shipped corpus)")
    p.add_argument("--num-prompts", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = write_corpus(args.out, args.num_prompts, args.seed)
    stats = corpus_stats(rows)
    print(json.dumps({"out": args.out, "bytes": Path(args.out).stat().st_size, **stats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
